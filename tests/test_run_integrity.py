"""The run directory's guarantees, on real files and real processes: one driver per run id (a lock a
killed driver does not keep), checksums of every table a stage wrote (a damaged table is detected
when read and its stage runs again, with the stages that read it), and the configuration each
stage ran under."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rec_core.run.config import ConfigError, load_config
from rec_core.run.directory import Run

REPO = Path(__file__).resolve().parents[1]


def open_run(tmp_path, *overrides) -> Run:
    return Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1", *overrides]))


def flip_a_byte_in_the_data(path: Path, needle: bytes) -> None:
    """Alter one byte of a value inside a Parquet file; the file stays readable by Parquet."""
    data = bytearray(path.read_bytes())
    data[data.index(needle)] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_second_driver_on_the_same_run_id_refuses_until_the_first_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rec_core.run.config import load_config; "
         "from rec_core.run.directory import Run; "
         f"Run(load_config(None, ['output_dir={tmp_path}', 'run_id=r1'])); print('holding', flush=True); "
         "time.sleep(600)"], cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        began = time.perf_counter()
        with pytest.raises(ConfigError, match=rf"run r1 in .* is in use by another driver \(pid {holder.pid} on "):
            open_run(tmp_path)
        assert time.perf_counter() - began < 5  # refused at once, not after waiting
        # the job's command line: one error line, exit 2
        second = subprocess.run([sys.executable, "-m", "jobs.ingest", f"output_dir={tmp_path}", "run_id=r1"],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is in use by another driver (pid {holder.pid}" in second.stderr
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # a driver that dies without cleaning up
        holder.wait()
    run = open_run(tmp_path)  # its lock went with it
    assert (run.root / ".lock").read_text().startswith(f"pid {os.getpid()} ")
    assert open_run(tmp_path).root == run.root  # the same process may open its run again


def fake_stage(run: Run, name: str, table: str, frame: pd.DataFrame, reads: str | None = None) -> None:
    with run.stage(name) as info:
        if reads:
            run.read_table(reads)
        info["rows"] = {table: run.write_table(table, frame)}


def test_a_damaged_table_is_refused_when_read_and_its_stage_and_readers_run_again(tmp_path, caplog):
    run = open_run(tmp_path)
    fake_stage(run, "ingest", "items", pd.DataFrame({"item_id": [0, 1], "title": ["first title", "second title"]}))
    fake_stage(run, "semantic", "clusters", pd.DataFrame({"user_id": [0], "items": [[0, 1]]}), reads="items")
    recorded = run.manifest["outputs"]["items/part-0.parquet"]
    assert recorded["stage"] == "ingest" and len(recorded["sha256"]) == 64
    assert run.manifest["stages"]["semantic"]["inputs"] == {"items/part-0.parquet": recorded["sha256"]}
    assert run.stage_done("ingest") and run.stage_done("semantic")

    path = run.table_path("items") / "part-0.parquet"
    flip_a_byte_in_the_data(path, b"second title")
    assert pd.read_parquet(path)["title"].tolist()[1] != "second title"  # Parquet alone would use it
    with pytest.raises(ConfigError, match=r"table 'items' of run .*r1 is damaged \(its checksum differs.*\): "
                                          r"stage ingest must run again"):
        run.read_table("items")
    with caplog.at_level("WARNING"):
        assert not open_run(tmp_path).stage_done("ingest")
    assert "stage ingest of run r1 runs again: its output items/part-0.parquet (checksum differs)" in caplog.text

    # ingest runs again and writes other content: the stage that read the old table runs again too
    fake_stage(run, "ingest", "items", pd.DataFrame({"item_id": [0, 1], "title": ["first title", "a new title"]}))
    assert run.stage_done("ingest") and not run.stage_done("semantic")
    fake_stage(run, "semantic", "clusters", pd.DataFrame({"user_id": [0], "items": [[0, 1]]}), reads="items")
    assert run.stage_done("semantic")

    (run.table_path("clusters") / "part-0.parquet").unlink()  # a table deleted by hand
    assert not run.stage_done("semantic") and run.stage_done("ingest")


def test_each_stage_records_the_configuration_it_ran_under(tmp_path):
    run = open_run(tmp_path, "models=[popularity]")
    fake_stage(run, "evaluate", "metrics", pd.DataFrame({"value": [0.5]}))
    later = open_run(tmp_path, "models=[popularity,comirec_sa]")  # `models` may change between invocations
    assert later.manifest["config"]["models"] == ["popularity", "comirec_sa"]
    assert later.manifest["stages"]["evaluate"]["config"]["models"] == ["popularity"]
    saved = json.loads(later.manifest_path.read_text())
    assert saved["stages"]["evaluate"]["config"] == {**saved["config"], "models": ["popularity"]}
    assert not later.stage_current("evaluate")  # and evaluate runs again for the model added


@pytest.mark.integration
def test_a_finished_run_with_a_damaged_table_redoes_that_stage_only(data_dir, tmp_path):
    """The refresh job (popularity only: no Ray needed) on ML-100K; the metrics table of the
    finished run is altered; the rerun redoes evaluate, which writes the same bytes, so the stages
    after it, whose inputs are unchanged, stay done."""
    from jobs.refresh import refresh

    overrides = [f"output_dir={tmp_path}", "run_id=r1", f"data.data_dir={data_dir}", "models=[popularity]"]
    refresh(load_config(None, overrides))
    root = tmp_path / "r1"
    first = json.loads((root / "manifest.json").read_text())
    path = root / "metrics" / "part-0.parquet"
    intact = path.read_bytes()
    flip_a_byte_in_the_data(path, b"recall")
    time.sleep(1.1)  # `started` has one-second resolution
    refresh(load_config(None, overrides))
    again = json.loads((root / "manifest.json").read_text())
    redone = [stage for stage in again["stages"]
              if again["stages"][stage]["started"] != first["stages"][stage]["started"]]
    assert redone == ["evaluate"]
    assert path.read_bytes() == intact


def test_a_retrained_model_reruns_the_stages_that_read_it_but_not_the_other_models(tmp_path):
    run = open_run(tmp_path)
    fake_stage(run, "ingest", "items", pd.DataFrame({"item_id": [0, 1]}))
    for model in ("train:a", "train:b", "train:b+student+distill"):
        fake_stage(run, model, f"weights_{model.split(':')[1]}", pd.DataFrame({"w": [1.0]}))
    fake_stage(run, "evaluate", "metrics", pd.DataFrame({"value": [0.5]}))
    fake_stage(run, "train:a", "weights_a", pd.DataFrame({"w": [2.0]}))  # a retrained with new weights
    assert run.stage_done("train:b") and run.stage_done("ingest")
    assert not run.stage_done("evaluate") and not run.stage_done("train:b+student+distill")


def test_a_table_written_in_parts_is_one_checksummed_file_and_nothing_when_it_fails(tmp_path):
    import pyarrow.parquet as pq

    run = open_run(tmp_path)
    with run.stage("export"):
        with run.table_writer("recommendations") as writer:
            writer.write(pd.DataFrame({"user": ["a", "b"], "score": [0.5, 0.25]}))
            writer.write(pd.DataFrame({"user": [], "score": []}))  # an empty part adds nothing
            writer.write(pd.DataFrame({"user": ["c"], "score": [0.125]}))
            assert not (run.root / "recommendations" / "part-0.parquet").exists()  # appears when complete
        assert writer.rows == 3
    assert pq.ParquetFile(run.root / "recommendations" / "part-0.parquet").num_row_groups == 2
    assert run.read_table("recommendations").to_dict("list") == {"user": ["a", "b", "c"], "score": [0.5, 0.25, 0.125]}
    assert run.manifest["stages"]["export"]["outputs"] == ["recommendations/part-0.parquet"]

    with pytest.raises(RuntimeError), run.stage("export2"), run.table_writer("user_interests") as writer:
        writer.write(pd.DataFrame({"user": ["a"]}))
        raise RuntimeError("scoring failed")
    assert list((run.root / "user_interests").iterdir()) == []  # no table, no temporary file left
    assert "user_interests/part-0.parquet" not in run.manifest["outputs"]


def test_a_sharded_table_registers_every_part_refuses_a_missing_one_and_drops_an_earlier_attempts(tmp_path):
    from rec_core.train.shards import write_part

    run = open_run(tmp_path)
    with run.stage("export"):
        with pytest.raises(RuntimeError):  # a failed attempt leaves no table and no part behind
            with run.sharded_table("recommendations") as folder:
                write_part(str(folder), "00005", pd.DataFrame({"user": [5], "rank": [1]}))
                raise RuntimeError("an actor failed")
        assert not (run.root / "recommendations").exists()
        with run.sharded_table("recommendations") as folder:
            for shard in (1, 0, 2):  # parts arrive in any order; the table reads in shard order
                write_part(str(folder), f"{shard:05d}", pd.DataFrame({"user": [shard, shard], "rank": [1, 2]}))
    assert run.manifest["stages"]["export"]["outputs"] == [f"recommendations/part-{s:05d}.parquet" for s in range(3)]
    assert run.read_table("recommendations")["user"].tolist() == [0, 0, 1, 1, 2, 2]
    assert len(run.read_table("recommendations", filters=[("rank", "==", 2)])) == 3
    (run.root / "recommendations" / "part-00001.parquet").unlink()  # a lost part is refused, never skipped
    with pytest.raises(ConfigError, match=r"its part recommendations/part-00001.parquet is missing\): "
                                          r"stage export must run again"):
        run.read_table("recommendations")
    with run.stage("export"):  # the stage again: the parts of the earlier run are replaced, not added to
        with run.sharded_table("recommendations") as folder:
            write_part(str(folder), "00000", pd.DataFrame({"user": [7], "rank": [1]}))
    assert run.read_table("recommendations")["user"].tolist() == [7]
    assert [name for name in run.manifest["outputs"] if name.startswith("recommendations/")] == [
        "recommendations/part-00000.parquet"]
