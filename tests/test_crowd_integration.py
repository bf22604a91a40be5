"""The crowd level end to end on ML-100K: cliques, CP-SAT max-cover in Ray tasks, crowd interests
from the real default LLM through the real Ray Data + vLLM stage, and the full dual-level model
trained on Ray Train; then a rerun with the same run id skips every finished stage."""

import json

import pyarrow.parquet as pq
import pytest

from rec_core.run.config import load_config

pytestmark = pytest.mark.integration

SMALL = ["train.epochs=1", "train.max_samples_per_epoch=3000", "train.cpus_per_worker=1", "train.embedding_dim=16",
         "eval.top_k=20", "models=[comirec_sa+align+contrast]", "semantic.max_users=40", "crowd.deterministic_time=0.5",
         "crowd.max_synthesized=3", "crowd.backend=llm", "llm.max_tokens=160"]


@pytest.fixture(scope="module")
def local_ray(local_ray):
    pytest.importorskip("vllm")  # the crowd stages run the LLM backend too
    return local_ray


def test_crowd_stages_and_full_model_end_to_end(local_ray, data_dir, tmp_path, shared_text_cache):
    from jobs.refresh import refresh
    from rec_core.crowd.max_cover import GREEDY_FALLBACK

    config = load_config(None, [f"output_dir={tmp_path}", "run_id=crowd", f"data.data_dir={data_dir}", *SMALL,
                                shared_text_cache])
    refresh(config)
    root = tmp_path / "crowd"
    stages = json.loads((root / "manifest.json").read_text())["stages"]
    assert [s for s in stages] == ["ingest", "semantic", "synthesize", "crowd_semantic",
                                   "train:comirec_sa+align+contrast", "evaluate", "export", "report", "publish"]
    assert all(info["status"] == "done" for info in stages.values())

    synthesized = pq.read_table(root / "synthesized_users").to_pandas()
    interactions = pq.read_table(root / "interactions").to_pandas()
    splits = pq.read_table(root / "user_splits").to_pandas()
    train_users = set(splits.loc[splits["split"] == "train", "user_id"])
    members = [u for group in synthesized["member_ids"] for u in group]
    assert len(members) == len(set(members)) and set(members) <= train_users  # disjoint training users
    assert synthesized["member_ids"].map(len).between(3, 5).all()
    items_of = interactions.groupby("user_id")["item_id"].apply(set)
    for row in synthesized.itertuples():
        union = set().union(*(items_of[u] for u in row.member_ids))
        assert 0 < len(row.item_ids) <= 15 and set(row.item_ids) <= union
        assert row.objective >= row.greedy_objective and row.bound >= row.objective
        assert row.status in ("optimal", "feasible", GREEDY_FALLBACK)
    assert stages["synthesize"]["rows"]["synthesized_users"] == len(synthesized) >= 20

    crowd = pq.read_table(root / "synthesized_semantic_clusters").to_pandas()
    assert set(crowd["backend"]) == {"llm"} and crowd["synth_id"].nunique() == 3
    assert stages["crowd_semantic"]["llm"]["sent"] == 3
    for synth_id, group in crowd[crowd["status"] != "failed"].groupby("synth_id"):
        chosen = set(synthesized.loc[synthesized["synth_id"] == synth_id, "item_ids"].iloc[0])
        assert {i for cluster in group["item_ids"] for i in cluster} <= chosen

    metrics = pq.read_table(root / "metrics").to_pandas()
    assert set(metrics["model"]) == {"comirec_sa+align+contrast"}
    assert metrics.loc[metrics["split"] == "test", "value"].notna().all()

    refresh(load_config(None, [f"output_dir={tmp_path}", "run_id=crowd", f"data.data_dir={data_dir}", *SMALL]))
    again = json.loads((root / "manifest.json").read_text())["stages"]
    assert again["synthesize"]["finished"] == stages["synthesize"]["finished"]  # skipped, not redone
    assert again["crowd_semantic"]["finished"] == stages["crowd_semantic"]["finished"]
