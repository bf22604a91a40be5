"""Runs, tables, model files, caches and the run lock on an object store (rec_core.storage.location),
against a real S3-compatible server on 127.0.0.1 (tests/conftest.py: s3_server), and the same
operations on a local folder."""

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import torch

from rec_core.llm.prompt_cache import PromptCache
from rec_core.run import directory
from rec_core.run.config import ConfigError, load_config
from rec_core.run.directory import Run
from rec_core.storage.location import Location, parquet_rows, read_parquet, write_parquet
from rec_core.train.saved_model import load_model, load_model_config, save_model


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """A fresh folder on each kind of storage."""
    if request.param == "local":
        return Location.of(tmp_path / "store")
    return Location.of(request.getfixturevalue("s3_server")) / f"store-{time.time_ns()}"


def test_a_location_reads_writes_lists_and_moves_files(place):
    assert not place.exists() and place.iterdir() == []
    place.mkdir()
    (place / "b.txt").write_text("second")
    (place / "a.txt").write_text("first")
    (place / "sub").mkdir()
    (place / "sub" / "c.bin").write_bytes(b"\x00\x01")
    assert [entry.name for entry in place.glob("*.txt")] == ["a.txt", "b.txt"]
    assert (place / "a.txt").read_text() == "first" and (place / "a.txt").size() == 5
    assert (place / "sub").is_dir() and (place / "sub" / "c.bin").is_file() and not (place / "a.txt").is_dir()
    (place / "b.txt").write_text("replaced")  # an overwrite is whole
    assert (place / "b.txt").read_text() == "replaced"
    (place / "a.txt").replace(place / "moved.txt")
    assert not (place / "a.txt").exists() and (place / "moved.txt").read_text() == "first"
    place.copy_tree(place.parent / f"{place.name}-copy")
    copy = place.parent / f"{place.name}-copy"
    assert (copy / "sub" / "c.bin").read_bytes() == b"\x00\x01" and (copy / "moved.txt").read_text() == "first"
    (place / "moved.txt").unlink()
    with pytest.raises(FileNotFoundError):
        (place / "moved.txt").unlink()
    (place / "moved.txt").unlink(missing_ok=True)
    write_parquet(pa.table({"x": [3, 1, 2]}), place / "t" / "part-0.parquet")
    assert parquet_rows(place / "t" / "part-0.parquet") == 3
    assert read_parquet(place / "t", filters=[("x", ">", 1)])["x"].to_pylist() == [3, 2]
    place.remove_tree()
    assert not place.exists() and not (place / "sub" / "c.bin").exists()
    # a Location travels to other processes (Ray actors) as its URI and opens the same place there
    assert pickle.loads(pickle.dumps(copy)) == copy and pickle.loads(pickle.dumps(copy)).read_text != ""
    assert (pickle.loads(pickle.dumps(copy)) / "moved.txt").read_text() == "first"


def test_a_remote_location_is_never_taken_for_a_local_path(s3_server):
    remote = Location.of(s3_server) / "runs"
    assert str(remote).startswith("s3://llmrec-test/runs?endpoint_override=")
    with pytest.raises(ValueError, match="not on a local disk"):
        open(remote)
    with pytest.raises(ConfigError, match="ftp:// is not a supported storage"):
        load_config(None, ["output_dir=ftp://host/runs"])


def test_data_sets_load_from_an_object_store_as_from_a_local_folder(s3_server, tmp_path):
    import gzip

    from jobs.synthetic import write_synthetic
    from rec_core.data.datasets import DataError, _lines, load_dataset
    from rec_core.run.directory import data_fingerprint

    write_synthetic(tmp_path / "data", users=200, items=100)
    bucket = Location.of(s3_server) / f"data-{time.time_ns()}"
    Location.of(tmp_path / "data").copy_tree(bucket)
    local, remote = load_dataset("generic", path=str(tmp_path / "data")), load_dataset("generic", path=str(bucket))
    for name in ("items", "users", "interactions"):
        pd.testing.assert_frame_equal(getattr(local, name), getattr(remote, name))
    assert remote.source_files == [str(bucket / "data.inter"), str(bucket / "data.item")]
    fingerprint = data_fingerprint(remote.source_files)
    assert fingerprint["files"][0]["sha256"] == data_fingerprint(local.source_files)["files"][0]["sha256"]
    # a gzipped file, and a bad line named by its URI and line number
    (bucket / "lines.txt.gz").write_bytes(gzip.compress(b"first\n\nthird\n"))
    assert list(_lines(bucket / "lines.txt.gz")) == [(1, "first"), (3, "third")]
    (bucket / "data.inter").write_bytes((tmp_path / "data" / "data.inter").read_bytes() + b"u1\tx\tnot-a-time\n")
    with pytest.raises(DataError, match=r"s3://.*/data.inter\?.*:\d+: timestamp is not a number"):
        load_dataset("generic", path=str(bucket))


def run_config(output_dir, run_id="r1", *overrides):
    return load_config(None, [f"output_dir={output_dir}", f"run_id={run_id}", *overrides])


def test_a_run_on_an_object_store_keeps_its_tables_checked_and_its_stages(s3_server):
    output_dir = Location.of(s3_server) / f"runs-{time.time_ns()}"
    run = Run(run_config(output_dir))
    with run.stage("ingest") as info:
        info["rows"] = {"items": run.write_table("items", pd.DataFrame({"item_id": [0, 1, 2], "title": list("abc")}))}
    with run.stage("export"):
        with run.table_writer("recommendations") as writer:
            writer.write(pd.DataFrame({"user_id": [1, 1], "item_id": [2, 0]}))
            writer.write(pd.DataFrame({"user_id": [2], "item_id": [1]}))
        with run.sharded_table("user_metrics") as folder:
            for part in ("b", "a"):
                write_parquet(pa.table({"part": [part]}), folder / f"part-{part}.parquet")
    manifest = json.loads((run.root / "manifest.json").read_text())
    assert {stage: record["status"] for stage, record in manifest["stages"].items()} == {"ingest": "done",
                                                                                        "export": "done"}
    assert set(manifest["outputs"]) == {"items/part-0.parquet", "recommendations/part-0.parquet",
                                        "user_metrics/part-a.parquet", "user_metrics/part-b.parquet"}
    assert run.read_table("items")["title"].tolist() == ["a", "b", "c"]
    assert run.read_table("recommendations")["item_id"].tolist() == [2, 0, 1]
    assert run.read_table("user_metrics")["part"].tolist() == ["a", "b"]  # shard (name) order
    assert run.stage_done("ingest") and run.has_table("items") and not run.has_table("metrics")
    assert [entry.name for entry in (run.root / "recommendations").iterdir()] == ["part-0.parquet"]  # no temporary

    # an object altered behind the run's back is refused naming the stage, and that stage runs again
    write_parquet(pa.table({"item_id": [9]}), run.root / "items" / "part-0.parquet")
    with pytest.raises(ConfigError, match="table 'items' .* damaged .* stage ingest must run again"):
        run.read_table("items")
    assert not run.stage_done("ingest")
    run.release()
    assert not (run.root / directory.LOCK_FILE).exists()  # the lease goes with its driver


def test_the_lease_of_an_object_store_run_refuses_a_second_driver_until_it_lapses(s3_server, monkeypatch):
    monkeypatch.setattr(directory, "LEASE_SETTLE_SECONDS", 0.05)
    output_dir = Location.of(s3_server) / f"runs-{time.time_ns()}"
    lock = output_dir / "r1" / directory.LOCK_FILE
    lock.write_text(json.dumps({"token": "other", "holder": "pid 7 on node-b since then", "renewed": time.time()}))
    with pytest.raises(ConfigError, match=r"in use by another driver \(pid 7 on node-b since then\)"):
        Run(run_config(output_dir))
    lock.write_text(json.dumps({"token": "other", "holder": "pid 7 on node-b",
                                "renewed": time.time() - directory.LEASE_SECONDS - 1}))
    run = Run(run_config(output_dir))  # the killed driver's lease lapsed: taken over
    assert json.loads(lock.read_text())["holder"].startswith("pid ")
    assert "node-b" not in json.loads(lock.read_text())["holder"]
    # the lease is renewed while the driver lives (its thread every LEASE_RENEW_SECONDS: one beat here)
    held = directory._held_locks[run.root]
    assert held._thread.is_alive()
    before = json.loads(lock.read_text())["renewed"]
    time.sleep(0.01)
    assert held.renew_once() and json.loads(lock.read_text())["renewed"] > before
    # a driver that stalled past its lease and finds another's token stops renewing and leaves it
    lock.write_text(json.dumps({"token": "next", "holder": "pid 8 on node-c", "renewed": time.time()}))
    assert not held.renew_once() and json.loads(lock.read_text())["token"] == "next"
    run.release()
    assert json.loads(lock.read_text())["token"] == "next" and not held._thread.is_alive()


def test_model_files_and_the_prompt_cache_on_an_object_store(s3_server):
    root = Location.of(s3_server) / f"caches-{time.time_ns()}"
    save_model(root / "models" / "m", "m", 3, {"dim": 2}, {"w": torch.arange(4.0)}, [{"epoch": 1}])
    config, weights = load_model(str(root / "models" / "m"))  # as a Ray Train worker gets it: a URI string
    assert config["num_items"] == 3 and torch.equal(weights["w"], torch.arange(4.0))

    cache = PromptCache(root / "llm_cache")
    for start in range(0, 6, 2):
        cache.add(pd.DataFrame({"key": [f"k{start}", f"k{start + 1}"], "model": "m", "output": ["a", "b"],
                                "num_input_tokens": 1, "num_generated_tokens": 1}))
    cache.add(pd.DataFrame({"key": ["k0"], "model": "m", "output": ["newer"], "num_input_tokens": 1,
                            "num_generated_tokens": 1}))
    assert len(cache.parts()) == 4
    found = cache.lookup(["k0", "k5", "missing"]).set_index("key")["output"].to_dict()
    assert found == {"k0": "newer", "k5": "b"}
    assert cache.compact(max_parts=2, part_rows=100) == 4 and len(cache.parts()) == 1
    assert cache.lookup(["k0", "k5"]).set_index("key")["output"].to_dict() == {"k0": "newer", "k5": "b"}
    # a damaged part is quarantined by another reader, its prompts only are sent again
    part = cache.parts()[0]
    part.write_bytes(part.read_bytes()[:-10])
    fresh = PromptCache(root / "llm_cache")
    assert fresh.lookup(["k0"]).empty and fresh.quarantined_ == [part.name]
    assert [entry.name for entry in (root / "llm_cache" / "quarantine").iterdir()] == [part.name]


QUICK = ["train.epochs=1", "train.max_samples_per_epoch=3000", "train.cpus_per_worker=1", "train.embedding_dim=16",
         "eval.top_k=20", "data.dataset=generic", "ray.dashboard=false"]  # the jobs start local Ray: no dashboard
# one neural model (the dual-level one, so every crowd stage runs on the bucket too): each model
# trained is a Ray Train run of ~15 s of start-up here, in each of the three nights below
MODEL = "comirec_sa+align+contrast"


@pytest.mark.integration
def test_the_refresh_job_runs_and_resumes_with_output_dir_on_an_object_store(s3_server, tmp_path):
    """The real command (`python -m jobs.refresh`, local Ray, Ray Train, Parquet) with
    output_dir=s3://...: every table, model, checkpoint, cache, the report and the `latest` pointer in
    the bucket, nothing on the local disk; a rerun skips every stage; Ray Train restores a run from
    its checkpoint in the bucket."""
    from jobs.synthetic import write_synthetic
    from rec_core.run.directory import read_run_table
    from rec_core.train.ray_train import fit_with_ray_train, train_run_name

    write_synthetic(tmp_path / "data", users=400, items=300)
    data = Location.of(s3_server) / "data"
    Location.of(tmp_path / "data").copy_tree(data)
    output_dir = Location.of(s3_server) / "nightly"
    # the data from the bucket; Ray actors too (encoder grouping, evaluation and export shards)
    # read and write the bucket
    command = [sys.executable, "-m", "jobs.refresh", f"output_dir={output_dir}", "run_id=s3run",
               f"data.path={data}", *QUICK, "semantic.distributed_min_histories=1",
               "scoring.distributed_min_users=1", "scoring.shard_users=128", f"models=[popularity,{MODEL}]"]
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    first = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    root = output_dir / "s3run"
    manifest = json.loads((root / "manifest.json").read_text())
    stages = ("ingest", "semantic", "synthesize", "crowd_semantic", f"train:{MODEL}", "evaluate", "export",
              "report", "publish")
    assert {stage: manifest["stages"][stage]["status"] for stage in stages} == {stage: "done" for stage in stages}
    metrics = read_run_table(root, "metrics")  # checked against the manifest's checksums
    assert set(metrics["model"]) == {"popularity", MODEL}
    assert len(read_run_table(root, "recommendations")) == 2 * 400 * 20
    assert len((root / "recommendations").glob("part-*.parquet")) == 4  # 400 users in shards of 128
    assert (root / "models" / MODEL / "model.safetensors").is_file()
    assert (root / "ray_train" / train_run_name(MODEL)).glob("checkpoint_*")  # Ray Train's storage: the bucket
    assert (root / "report.html").read_text().startswith("<!doctype html>")
    assert (output_dir / "latest").read_text().strip() == "s3run"
    assert (output_dir / "text_embedding_cache").glob("part-*.parquet")
    assert not (root / directory.LOCK_FILE).exists()  # the driver's lease went with it
    assert list(workdir.iterdir()) == []  # nothing written locally
    assert manifest["data_fingerprint"]["files"][0]["path"] == str(data / "data.inter")

    again = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in stages:
        if not stage.startswith("train:"):  # finished models are skipped without a line
            assert f"stage {stage} already done in this run: skipped" in again.stderr
    rerun = json.loads((root / "manifest.json").read_text())
    assert {stage: rerun["stages"][stage]["finished"] for stage in stages} == \
        {stage: manifest["stages"][stage]["finished"] for stage in stages}
    assert "RayTrainWorker" not in again.stderr

    # the next night, incremental against the published run: found through the `latest` object
    night = [argument.replace("run_id=s3run", "run_id=night2") for argument in command] + ["previous_run=latest"]
    second = subprocess.run(night, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "incremental night" in second.stdout and "from run s3run" in second.stdout
    plan = json.loads((output_dir / "night2" / "manifest.json").read_text())
    assert plan["stages"][f"train:{MODEL}"]["start"] == "warm start from s3run"
    assert plan["stages"]["semantic"]["histories"]["grouped"] == 0  # the same data: every grouping kept
    assert (output_dir / "latest").read_text().strip() == "night2"

    import ray

    # the first night's Ray Train run (1 epoch), continued to 2 epochs from its checkpoint in the bucket
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        config = load_config(None, [f"output_dir={output_dir}", "run_id=s3run", f"data.path={data}", *QUICK,
                                    f"models=[{MODEL}]", "train.epochs=2", "train.patience=5"])
        continued = fit_with_ray_train(MODEL, config, root)
    finally:
        ray.shutdown()
    first_night = load_model_config(root / "models" / MODEL)["history"]
    assert [epoch["epoch"] for epoch in first_night] == [1] and continued["resumed_after"] == [1]
    assert [epoch["epoch"] for epoch in continued["history"]] == [1, 2]
    assert continued["history"][0] == first_night[0]  # epoch 1 restored from the bucket, not retrained
