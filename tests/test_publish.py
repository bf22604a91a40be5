import json

import pandas as pd
import pytest

from rec_core.run.config import ConfigError, load_config
from rec_core.run.directory import Run


def finished_run(output_dir, run_id, valid_recall: dict, dataset="movielens-100k", **settings):
    """A run whose evaluate and export are done, with these validation Recall@50 figures."""
    overrides = [f"output_dir={output_dir}", f"run_id={run_id}", f"data.dataset={dataset}",
                 *[f"publish.{key}={value}" for key, value in settings.items()]]
    run = Run(load_config(None, overrides))
    rows = [{"model": model, "split": split, "metric": "recall", "k": 50, "value": value}
            for model, value in valid_recall.items() for split in ("valid", "test")]
    run.write_table("metrics", pd.DataFrame(rows))
    for stage in ("evaluate", "export"):
        with run.stage(stage):
            pass
    return run


def test_a_worse_run_is_refused_and_yesterdays_stays_published(tmp_path):
    from jobs.publish import publish
    from rec_core.run.publish import GateRefused, published_run

    monday = finished_run(tmp_path, "monday", {"popularity": 0.20, "sasrec": 0.30})
    publish(monday)
    assert published_run(tmp_path) == monday.root and (monday.root / "_SUCCESS").is_file()
    assert (tmp_path / "latest" / "metrics").is_dir()  # readers go through the pointer

    tuesday = finished_run(tmp_path, "tuesday", {"popularity": 0.20, "sasrec": 0.29})  # -3.3%: within 5%
    publish(tuesday)
    assert published_run(tmp_path) == tuesday.root
    checks = json.loads((tuesday.root / "manifest.json").read_text())["publish"]["checks"]
    assert {c["model"]: c["passed"] for c in checks} == {"popularity": True, "sasrec": True}

    wednesday = finished_run(tmp_path, "wednesday", {"popularity": 0.20, "sasrec": 0.25, "new_model": 0.1})
    with pytest.raises(GateRefused, match=r"sasrec \(0.2500 < 0.2755, published 0.2900\); latest still points at tuesday"):
        publish(wednesday)
    assert published_run(tmp_path) == tuesday.root
    assert not (wednesday.root / "_SUCCESS").exists()
    manifest = json.loads((wednesday.root / "manifest.json").read_text())
    assert manifest["publish"]["status"] == "refused" and manifest["stages"]["publish"]["status"] == "failed"

    # the operator accepts the drop: the same run, published again under a looser tolerance
    publish(Run(load_config(None, [f"output_dir={tmp_path}", "run_id=wednesday", "publish.tolerance=0.2"])))
    assert published_run(tmp_path) == wednesday.root


def test_the_job_exits_3_when_the_gate_refuses(tmp_path, capsys):
    from jobs.publish import main, publish

    publish(finished_run(tmp_path, "good", {"sasrec": 0.30}))
    finished_run(tmp_path, "bad", {"sasrec": 0.10})
    with pytest.raises(SystemExit) as exit_info:
        main([f"output_dir={tmp_path}", "run_id=bad"])
    assert exit_info.value.code == 3
    assert "refused: run bad not published" in capsys.readouterr().err


def test_an_unfinished_run_or_another_data_set_is_not_published(tmp_path):
    from jobs.publish import publish

    with pytest.raises(ConfigError, match="evaluate and export not finished"):
        publish(Run(load_config(None, [f"output_dir={tmp_path}", "run_id=half"])))
    publish(finished_run(tmp_path, "ml", {"sasrec": 0.3}))
    with pytest.raises(ConfigError, match="one output_dir per data set"):
        publish(finished_run(tmp_path, "beauty", {"sasrec": 0.1}, dataset="amazon-beauty"))
    with pytest.raises(ConfigError, match="names the pointer"):
        load_config(None, ["run_id=latest"])


def test_retention_keeps_the_newest_runs_published_ones_and_unfinished_ones(tmp_path):
    from jobs.publish import publish

    first = finished_run(tmp_path, "d1", {"sasrec": 0.3})
    publish(first)  # published: kept whatever its age
    old = [finished_run(tmp_path, f"d{day}", {"sasrec": 0.3}) for day in (2, 3)]
    running = Run(load_config(None, [f"output_dir={tmp_path}", "run_id=d4"]))
    running.manifest["stages"]["train:sasrec"] = {"status": "running"}
    running.save_manifest()
    newer = [finished_run(tmp_path, f"d{day}", {"sasrec": 0.3}, keep_runs=2) for day in (5, 6)]
    for run, created in zip([first, *old, running, *newer], range(1, 7)):  # `created` orders the runs
        run.manifest["created"] = f"2026-12-0{created}T02:00:00+00:00"
        run.save_manifest()
    (tmp_path / "text_embedding_cache").mkdir()  # not a run: never touched
    publish(newer[-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d1", "d4", "d5", "d6", "latest", "text_embedding_cache"]
    assert json.loads((newer[-1].root / "manifest.json").read_text())["publish"]["deleted_runs"] == ["d3", "d2"]


def test_a_model_added_to_a_finished_run_is_evaluated_exported_and_reported_again(tmp_path, monkeypatch):
    """Stages downstream of training cover every model: done for other models is not done."""
    import jobs.refresh as job

    calls = []

    def fake(stage):
        def run_stage(run):
            calls.append(stage)
            with run.stage(stage):
                if stage == "evaluate":  # what a skipped evaluate prints again
                    run.write_table("metrics", pd.DataFrame([{"model": m, "split": "test", "metric": "recall",
                                                              "k": 50, "value": 0.1} for m in run.config["models"]]))
        return run_stage

    monkeypatch.setattr(job, "stage_function", fake)  # every stage of the DAG is a recording fake
    overrides = [f"output_dir={tmp_path}", "run_id=r1"]
    job.refresh(load_config(None, [*overrides, "models=[popularity]"]))
    assert calls == ["ingest", "train", "evaluate", "export", "report", "publish"]
    calls.clear()
    job.refresh(load_config(None, [*overrides, "models=[popularity]"]))
    assert calls == ["train"]  # everything else is done for these models (train skips its own)
    calls.clear()
    job.refresh(load_config(None, [*overrides, "models=[popularity,sasrec]"]))
    assert calls == ["train", "evaluate", "export", "report", "publish"]
