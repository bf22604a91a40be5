"""The real default model through the real Ray Data + vLLM stage on a handful of ML-100K users."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from rec_core.run.config import load_config
from rec_core.run.directory import Run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory, data_dir):
    pytest.importorskip("vllm")
    ray = pytest.importorskip("ray")
    from rec_core.llm.offline_model import default_model_dir

    if not (default_model_dir() / "config.json").exists():
        pytest.fail("offline default model missing: bin/setup prepares it")
    from jobs.ingest import ingest

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    root = tmp_path_factory.mktemp("llm")
    config = load_config(None, [f"output_dir={root}", "run_id=llm", f"data.data_dir={data_dir}",
                                "semantic.backend=llm", "semantic.max_users=4", "semantic.max_items=8",
                                "llm.max_tokens=160"])
    run = Run(config)
    ingest(run)
    yield run
    ray.shutdown()


def test_llm_backend_writes_validated_clusters_and_reruns_from_cache(llm_run):
    from jobs.semantic import semantic

    table = semantic(llm_run).to_pandas()
    stage = llm_run.manifest["stages"]["semantic"]
    assert stage["llm"]["sent"] == 4 and stage["llm"]["errors"] == 0
    assert stage["llm"]["output_tokens"] > 0 and stage["llm"]["input_tokens"] > 0
    assert set(table["backend"]) == {"llm"} and table["user_id"].nunique() == 4
    assert set(table["status"]) <= {"ok", "repaired", "failed"}
    for user, group in table[table["status"] != "failed"].groupby("user_id"):
        items = [i for cluster in group["item_ids"] for i in cluster]
        assert len(items) == len(set(items)) <= 8  # a partition of the user's last 8 items
        assert 1 <= len(group) <= 4
    assert table["cache_key"].str.len().eq(64).all()
    on_disk = pq.read_table(llm_run.root / "user_semantic_clusters").to_pandas()
    assert len(on_disk) == len(table)

    semantic(llm_run)  # the same prompts again: all from the cache, nothing sent
    again = json.loads((llm_run.root / "manifest.json").read_text())["stages"]["semantic"]["llm"]
    assert again["sent"] == 0 and again["cache_hits"] == 4


def test_changed_history_sends_only_that_users_prompt_and_engines_end_quietly(llm_run, capfd):
    """One changed user, then another: each pass sends that user's prompt alone. The first pass's
    engine actor is torn down while the second runs, as in a job whose LLM stage is followed by more
    Ray work: nothing of that teardown may reach the log as a traceback (rec_core.llm.stage.engine_env)."""
    import time

    from jobs.semantic import semantic

    table = llm_run.read_table("user_semantic_clusters")
    for user in (int(table["user_id"].iloc[0]), int(table["user_id"].iloc[-1])):
        interactions = llm_run.read_table("interactions")
        last = interactions.index[interactions["user_id"] == user][-1]
        interactions.loc[last, "item_id"] = (interactions.loc[last, "item_id"] + 1) % 1682
        llm_run.write_table("interactions", interactions)
        semantic(llm_run)
        stats = llm_run.manifest["stages"]["semantic"]["llm"]
        assert stats["sent"] == 1 and stats["cache_hits"] == 3
    time.sleep(3)  # Ray forwards the workers' output to the driver a moment later
    log = "".join(capfd.readouterr())
    assert "vLLMEngineStageUDF" in log  # the capture holds the engine actors' output, forwarded by Ray
    for noise in ("Traceback", "died unexpectedly", "EngineDeadError"):
        assert noise not in log, noise


def test_killed_llm_stage_resumes_without_resending(llm_run, tmp_path, data_dir):
    """`python -m jobs.semantic` is killed (SIGKILL) after its first answers reach the cache, and one
    of the cache parts it wrote is then cut short; the rerun with the same run id quarantines that
    part, sends only the prompts that had no intact answer (those of the bad part are the only ones
    sent twice) and loses no user. The rerun looks the prompts up on Ray Data (rec_core.llm.stage)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import ray

    from jobs.ingest import ingest
    from jobs.semantic import semantic
    from rec_core.llm.stage import cache_folder
    from rec_core.llm.prompt_cache import PromptCache

    overrides = [f"output_dir={tmp_path}", "run_id=killed", f"data.data_dir={data_dir}", "semantic.backend=llm",
                 "semantic.max_users=12", "semantic.max_items=8", "llm.max_tokens=160", "llm.batch_size=2",
                 "llm.cache_flush_rows=2"]
    config = load_config(None, overrides)
    opened = Run(config)
    ingest(opened)
    opened.release()  # the job below is the run's driver now
    cache = PromptCache(cache_folder(config))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    job = subprocess.Popen([sys.executable, "-m", "jobs.semantic", *overrides], cwd=Path(__file__).parents[1],
                           env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while len(cache) == 0 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = job.poll() is None
    if alive:
        os.killpg(job.pid, signal.SIGKILL)
    _, stderr = job.communicate(timeout=60)
    answered_before_kill = len(cache)
    assert alive, f"the stage ended before it could be killed (rc {job.returncode}):\n{stderr.decode()[-2000:]}"
    assert 0 < answered_before_kill < 12, answered_before_kill
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["stages"]["semantic"]["status"] == "running"
    damaged = cache.parts()[0]
    lost = pq.read_table(damaged).num_rows
    damaged.write_bytes(damaged.read_bytes()[: damaged.size() // 2])

    # the restart, same run id, with the prompts rendered and looked up on Ray Data (a join against
    # the cache) and the prompts left sent from the join's Ray Dataset
    table = semantic(Run(load_config(None, [*overrides, "llm.distributed_min_prompts=1"]))).to_pandas()
    stats = json.loads((tmp_path / "killed" / "manifest.json").read_text())["stages"]["semantic"]
    assert stats["status"] == "done"
    assert stats["llm"]["cache_parts_quarantined"] == 1 and stats["llm"]["looked_up_on_ray"]
    assert (cache.folder / "quarantine" / damaged.name).is_file()
    assert stats["llm"]["cache_hits"] == answered_before_kill - lost
    assert stats["llm"]["sent"] == 12 - answered_before_kill + lost
    assert table["user_id"].nunique() == 12


def test_graph_descriptions_through_the_llm_for_two_layers(llm_run, tmp_path, data_dir, shared_text_cache):
    """GaCLLM's LLM aggregator: two layers, each one pass of the real Ray Data + vLLM stage over a
    budget of 6 nodes (2 users, 4 items); the rest of the graph carries the encoder aggregator. A
    rerun of the stage sends nothing (every layer's prompts are answered from the cache)."""
    from jobs.describe import describe
    from jobs.ingest import ingest

    overrides = [f"output_dir={tmp_path}", "run_id=graph", f"data.data_dir={data_dir}", "graph.backend=llm",
                 "graph.max_llm_nodes=6", "graph.layers=2", "graph.neighbours=4", "llm.max_tokens=160",
                 shared_text_cache]
    run = Run(load_config(None, overrides))
    ingest(run)
    info = describe(run)
    descriptions = run.read_table("node_descriptions")
    embeddings = run.read_table("node_text_embeddings")
    nodes = 943 + 1682
    assert len(descriptions) == len(embeddings) == 3 * nodes
    by_layer = descriptions.groupby(["layer", "backend"]).size().to_dict()
    assert by_layer == {(0, "layer0"): nodes, (1, "encoder"): nodes - 6, (1, "llm"): 6, (2, "encoder"): nodes - 6,
                        (2, "llm"): 6}
    generated = descriptions[descriptions["backend"] == "llm"]
    assert set(generated["status"]) <= {"ok", "repaired", "failed"}
    assert generated["cache_key"].str.len().eq(64).all() and generated["text"].str.len().gt(0).all()
    assert (generated["detail"].ne("") | generated["status"].eq("ok")).all()  # every repair says why
    assert sorted(generated[generated["layer"] == 1]["node_type"]) == ["item"] * 4 + ["user"] * 2
    vectors = np.stack(embeddings["vector"].to_numpy())
    assert vectors.shape[1] == 384 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    for record in info["layers"]:
        # a prompt identical to an earlier one (e.g. a repaired node whose whole neighbourhood is unchanged)
        # is answered from the cache within the same run
        llm = record["llm"]
        assert llm["prompts"] == llm["sent"] + llm["cache_hits"] == 6 and llm["sent"] >= 4
        assert llm["errors"] == 0 and llm["output_tokens"] > 0
        assert sum(record["user"].get(s, 0) for s in ("ok", "repaired", "failed")) == 943
        assert record["llm"]["longest_prompt_chars"] <= 400 + 4 * (160 + 8) + 80
    assert set(info["category_probe"]) == {"layer_0", "layer_1", "layer_2"}
    assert set(info["llm_items_probe"]) == {"layer_1", "layer_2"}
    assert {probe["items"] for probe in info["llm_items_probe"].values()} == {4}  # the 4 budget items (all labelled)

    again = describe(Run(load_config(None, overrides)))  # the rerun: every layer from the cache
    assert [r["llm"]["sent"] for r in again["layers"]] == [0, 0]
    assert [r["llm"]["cache_hits"] for r in again["layers"]] == [6, 6]
    assert again["text_encoder"]["embedded"] == 0  # and every text from the embedding cache
    assert run.read_table("node_descriptions").equals(descriptions)


def test_session_distillation_with_the_llm_teacher_on_ray_train(llm_run, tmp_path, data_dir):
    """ALKDRec end to end on HetRec-ML: teacher and student on Ray Train, the active selection, the
    real LLM writing the hints and ranking 4 selected sessions through the Ray Data + vLLM stage
    (schema: only the teacher's candidates, exactly 25), the encoder teacher on 6 random ones, both
    students fine-tuned on Ray Train and evaluated on the session protocol. A rerun of the ranking
    sends nothing."""
    from jobs.distill import rank_sessions
    from jobs.refresh import refresh

    llm_model, encoder_model = "fpmc+student+distill.llm.4", "fpmc+student+distill.encoder.random.6"
    overrides = [f"output_dir={tmp_path}", "run_id=alkd", f"data.data_dir={data_dir}",
                 "data.dataset=sessions-hetrec-ml", "train.epochs=1", "train.max_samples_per_epoch=3000",
                 "train.cpus_per_worker=1", "session.teacher_dim=16", "session.student_dim=4", "distill.epochs=2",
                 "eval.ks=[5,10,20]", "eval.top_k=20", f"models=[fpmc,fpmc+student,{llm_model},{encoder_model}]"]
    run = refresh(load_config(None, overrides))
    stages = run.manifest["stages"]
    assert list(stages) == ["ingest", "train:fpmc", "train:fpmc+student", "distill", f"train:{llm_model}",
                            f"train:{encoder_model}", "evaluate", "export", "report", "publish"]
    rankings = run.read_table("llm_rankings")
    assert rankings.groupby("backend").size().to_dict() == {"encoder": 6, "llm": 4}
    assert set(rankings["status"]) <= {"ok", "repaired", "failed"}
    llm = rankings[rankings["backend"] == "llm"]
    assert llm["cache_key"].str.len().eq(64).all()
    assert (llm["detail"].ne("") | llm["status"].eq("ok")).all()  # every repair or failure says why
    for ranked, status in zip(rankings["ranked_ids"], rankings["status"]):
        assert status == "failed" or (len(ranked) == 25 and len(set(ranked)) == 25)
    selections = run.read_table("distill_selections")
    assert selections.groupby("model").size().to_dict() == {llm_model: 4, encoder_model: 6}
    teachers = stages["distill"]["teachers"]
    assert teachers["fpmc/llm"]["calls"] == 5 and teachers["fpmc/llm"]["rankings"]["errors"] == 0
    assert teachers["fpmc/llm"]["hints_prompt"]["errors"] == 0 and teachers["fpmc/llm"]["hint_cases_shown"] >= 1
    assert bool(teachers["fpmc/llm"]["hints"]) != bool(teachers["fpmc/llm"]["hints_dropped"])  # kept, or dropped with why
    assert teachers["fpmc/llm"]["rankings"]["output_tokens"] > 0
    assert set(teachers["fpmc/encoder"]["list_quality"]) == {"target_in_top5", "target_in_top10", "target_in_top25"}
    metrics = run.read_table("metrics")
    assert {llm_model, encoder_model} <= set(metrics["model"])
    for model in (llm_model, encoder_model):
        assert stages[f"train:{model}"]["best_valid_recall@50"] >= stages["train:fpmc+student"]["best_valid_recall@50"]

    again = rank_sessions(Run(load_config(None, overrides)), [llm_model, encoder_model])
    assert again["teachers"]["fpmc/llm"]["rankings"]["sent"] == 0
    assert again["teachers"]["fpmc/llm"]["hints_prompt"]["sent"] == 0
    assert run.read_table("llm_rankings").equals(rankings)
