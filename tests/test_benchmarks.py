"""The benchmark command line: every family's sub-commands are there, and the sweep grid parses."""

import pytest

from jobs.benchmark import main
from jobs.benchmarks import local_folder
from jobs.benchmarks.models import description_variants, parse_grid
from rec_core.run.config import ConfigError


def test_every_benchmark_is_a_sub_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name in ("baselines", "alignment", "ablation", "descriptions", "paired", "sweep", "llm-throughput", "llm-cache", "describe-cache", "describe-cost", "grouping",
                 "max-cover", "scale"):
        assert name in text


def test_benchmarks_on_local_files_refuse_an_object_store(tmp_path):
    assert local_folder({"output_dir": str(tmp_path)}, "bench-scale", "scale") == tmp_path / "bench-scale"
    with pytest.raises(ConfigError, match="benchmark incremental: output_dir=s3://bucket/runs is an object store"):
        local_folder({"output_dir": "s3://bucket/runs"}, "bench-incremental", "incremental")


def test_sweep_grid_is_every_combination():
    points = parse_grid(["contrast.weight=0.05,0.1", "contrast.temperature=0.1,0.2,0.5"])
    assert len(points) == 6
    assert points[0] == {"contrast.weight": "0.05", "contrast.temperature": "0.1"}
    assert points[-1] == {"contrast.weight": "0.1", "contrast.temperature": "0.5"}
    with pytest.raises(ConfigError, match="expected key=value1,value2"):
        parse_grid(["contrast.weight"])


def test_description_variants_are_named_settings_of_lightgcn_desc():
    assert description_variants("layer0,encoder,llm", 0) == [
        ("layer0", ["lightgcn+desc"], ["graph.layers=0", "desc.fusion=sum"]),
        ("encoder", ["lightgcn+desc"], ["graph.backend=encoder", "desc.fusion=sum"])]
    (label, models, settings), = description_variants("llm", 500)
    assert settings == ["graph.backend=llm", "desc.fusion=sum", "graph.max_llm_nodes=500"]
    (_, _, aligned), = description_variants("layer0-aligned", 0)
    assert "desc.fusion=none" in aligned
    (_, _, llm_aligned), = description_variants("llm-aligned,layer0", 300)[:1]
    assert llm_aligned == ["graph.backend=llm", "desc.fusion=none", "graph.max_llm_nodes=300"]
    assert [label for label, _, _ in description_variants("llm-aligned,layer0", 0)] == ["layer0"]
    with pytest.raises(ConfigError, match="--variants 'layer1'"):
        description_variants("layer1", 0)


def test_new_interactions_go_to_training_users_after_their_latest_item():
    import numpy as np
    import pandas as pd

    from jobs.benchmarks.llm import add_interactions

    interactions = pd.DataFrame({"user_id": [0, 0, 1, 1, 2, 2], "item_id": [0, 1, 1, 2, 2, 3], "ts": [1, 2, 1, 5, 3, 4]})
    splits = pd.DataFrame({"user_id": [0, 1, 2], "split": ["train", "train", "test"]})
    changed, picked = add_interactions(interactions, splits, share=0.5, rng=np.random.default_rng(0))
    assert len(picked) == 2 and set(picked) == {0, 1} and len(changed) == 8
    for user in picked:
        rows = changed[changed["user_id"] == user]
        assert rows["ts"].iloc[-1] == interactions[interactions["user_id"] == user]["ts"].max() + 1
        assert rows["item_id"].iloc[-1] not in set(rows["item_id"].iloc[:-1])
    assert changed["user_id"].is_monotonic_increasing and changed.dtypes.equals(interactions.dtypes)


def test_presented_text_is_the_latest_written_one():
    import pandas as pd

    from jobs.benchmarks.llm import presented_texts

    table = pd.DataFrame({"node_type": ["user"] * 3 + ["item"] * 3, "node_id": [4] * 3 + [7] * 3,
                          "layer": [0, 1, 2] * 2, "text": ["u0", "u1", "u2", "i0", "", ""],
                          "backend": ["layer0", "llm", "llm", "layer0", "encoder", "encoder"]})
    shown = presented_texts(table, layers=2)
    assert [s[("user", 4)] for s in shown] == ["u0", "u1", "u2"]
    assert [s[("item", 7)] for s in shown] == ["i0", "i0", "i0"]


def test_scale_figures_give_each_sample_to_the_stage_running_then_and_fit_the_growth():
    from jobs.benchmarks.scale import MIB, growth_exponents, stage_figures

    manifest = {"stages": {
        "ingest": {"status": "done", "started": "2026-12-05T10:00:00+00:00", "seconds": 2.0,
                   "outputs": ["items/part-0.parquet", "interactions/part-0.parquet"], "inputs": {},
                   "rows": {"items": 10, "interactions": 100, "users_train": 8}},
        "train:m": {"status": "done", "started": "2026-12-05T10:00:05+00:00", "seconds": 3.0,
                    "outputs": ["models/m/model.safetensors"], "inputs": {"interactions/part-0.parquet": "x"}},
        "evaluate": {"status": "failed", "started": "2026-12-05T10:00:09+00:00", "seconds": 1.0}}}
    import datetime

    t0 = datetime.datetime(2026, 12, 5, 10, tzinfo=datetime.timezone.utc).timestamp()
    samples = [(t0 + 1, 100 * MIB, 300 * MIB), (t0 + 4, 900 * MIB, 900 * MIB), (t0 + 6, 200 * MIB, 700 * MIB)]
    figures = stage_figures(manifest, samples)
    assert set(figures) == {"ingest", "train:m"}  # a failed stage has no figures
    assert figures["ingest"] == {"seconds": 2.0, "peak_driver_rss_mib": 100.0, "peak_total_rss_mib": 300.0,
                                 "rows_out": 110, "rows_in": 0}
    assert figures["train:m"]["peak_driver_rss_mib"] == 200.0 and figures["train:m"]["rows_in"] == 100

    per_size = [{"a": {"seconds": 1.0}, "b": {"seconds": 2.0}}, {"a": {"seconds": 10.0}, "b": {"seconds": 200.0}},
                {"a": {"seconds": 100.0}}]
    exponents = growth_exponents([1_000, 10_000, 100_000], per_size)
    assert exponents == {"a": 1.0, "b": 2.0}


def test_a_sweep_stops_after_the_last_training_stage():
    from jobs.refresh import stages_for, stages_until

    def names(models, stop_after):
        return stages_until(stages_for(models), stop_after)

    assert names(["comirec_sa+align"], "train") == ["ingest", "semantic", "train"]
    # a distilled student is fine-tuned by the distill stage, so a sweep of distill.* reaches it
    assert names(["fpmc", "fpmc+student", "fpmc+student+distill"], "train") == ["ingest", "train", "distill"]
    assert names(["fpmc", "fpmc+student+distill"], "ingest") == ["ingest"]


def test_every_stage_of_the_refresh_names_a_function_that_exists():
    from jobs.refresh import STAGES, stage_function, stages_for

    everything = stages_for(["comirec_sa+align+contrast", "lightgcn+desc", "fpmc+student+distill"])
    assert set(everything) | {"publish"} == set(STAGES)
    for stage in STAGES:
        assert callable(stage_function(stage)), stage
