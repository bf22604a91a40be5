"""Faults with real processes on ML-100K and real local Ray: a Ray Train worker killed mid-epoch,
and the driver stopped with SIGTERM or SIGKILL during training and then rerun. Each ends with the
run complete and nothing lost; a restarted training resumes from its checkpoint and ends where an
uninterrupted one does. (The LLM stage killed mid-stage, a damaged prompt-cache part and the second
node of a two-node cluster killed mid-stage are in test_llm_stage_integration.py and
test_two_node_cluster.py; damaged tables and two drivers on one run id in test_run_integrity.py.)"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rec_core.run.config import load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
# full epochs of ML-100K (~6 s each on 2 CPU workers): long enough to be killed inside one
TRAINING = ["train.num_workers=2", "train.cpus_per_worker=1", "train.embedding_dim=16", "train.epochs=3",
            "train.patience=5", "eval.top_k=20"]


def checkpoints(run_root: Path, name: str) -> list[dict]:
    """The checkpoints Ray Train's controller has registered (a folder alone may still be uploading)."""
    snapshot = run_root / "ray_train" / name / "checkpoint_manager_snapshot.json"
    try:
        return json.loads(snapshot.read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return []


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def train_worker_pids() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ray::RayTrainWorker" in line]


def valid_curve(history: list[dict]) -> list[tuple]:
    return [(h["epoch"], h["loss"], h["valid_recall@50"], h["valid_ndcg@50"]) for h in history]


def test_a_killed_ray_train_worker_resumes_from_the_checkpoint_to_the_same_result(local_ray, data_dir, tmp_path):
    from jobs.ingest import ingest
    from rec_core.run.directory import Run
    from rec_core.train.ray_train import fit_with_ray_train

    run = Run(load_config(None, [f"output_dir={tmp_path}", "run_id=worker", f"data.data_dir={data_dir}", *TRAINING]))
    ingest(run)
    killed: list[int] = []

    def kill_a_worker_inside_epoch_two():
        wait_for(lambda: checkpoints(run.root, "killed"), 300, "the first checkpoint")
        time.sleep(1.0)  # epoch 2 is running (an epoch takes ~6 s)
        pids = train_worker_pids()
        os.kill(pids[-1], signal.SIGKILL)
        killed.append(pids[-1])

    killer = threading.Thread(target=kill_a_worker_inside_epoch_two, daemon=True)
    killer.start()
    interrupted = fit_with_ray_train("comirec_sa", run.config, run.root, run_name="killed")
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    assert interrupted["resumed_after"] == [1]  # the new worker group started from epoch 1's checkpoint
    uninterrupted = fit_with_ray_train("comirec_sa", run.config, run.root, run_name="uninterrupted")
    assert uninterrupted["resumed_after"] == []
    assert valid_curve(interrupted["history"]) == valid_curve(uninterrupted["history"])
    assert interrupted["best_metric"] == uninterrupted["best_metric"]


# SIGKILL of the driver mid-stage is also test_llm_stage_integration's kill test (in every run)
@pytest.mark.parametrize("stop", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGKILL"])
def test_a_driver_stopped_during_training_is_rerun_to_a_complete_run(local_ray, data_dir, tmp_path, stop):
    """`python -m jobs.refresh` is stopped while it trains; the rerun of the same run id keeps the
    finished stages, resumes the training from its checkpoint and writes every table in full."""
    overrides = [f"output_dir={tmp_path}", "run_id=stopped", f"data.data_dir={data_dir}", *TRAINING,
                 "models=[popularity,comirec_sa]"]
    env = {**os.environ, "RAY_ADDRESS": local_ray.get_runtime_context().gcs_address}
    root = tmp_path / "stopped"
    job = subprocess.Popen([sys.executable, "-m", "jobs.refresh", *overrides], cwd=REPO, env=env,
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: checkpoints(root, "comirec_sa") or job.poll() is not None, 300, "the first checkpoint")
        assert job.poll() is None, f"the job ended before it could be stopped:\n{job.stderr.read().decode()[-2000:]}"
        os.killpg(job.pid, stop)
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    manifest = json.loads((root / "manifest.json").read_text())
    ingest_finished = manifest["stages"]["ingest"]["finished"]
    if stop == signal.SIGTERM:  # unwound: exit 143, the stage recorded as failed, one line saying so
        assert job.returncode == 143 and "Traceback" not in stderr.decode(), stderr.decode()[-3000:]
        assert "stopped by signal 15; rerun the same run_id to resume" in stderr.decode()
        assert manifest["stages"]["train:comirec_sa"]["status"] == "failed"
    else:  # no chance to record anything: the stage still reads "running", which a rerun redoes
        assert job.returncode == -signal.SIGKILL
        assert manifest["stages"]["train:comirec_sa"]["status"] == "running"

    rerun = subprocess.run([sys.executable, "-m", "jobs.refresh", *overrides], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)  # the lock went with the driver
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    manifest = json.loads((root / "manifest.json").read_text())
    stages = manifest["stages"]
    assert all(record["status"] == "done" for record in stages.values())
    assert stages["ingest"]["finished"] == ingest_finished  # kept, not redone
    assert stages["train:comirec_sa"]["resumed_after_epochs"][0] >= 1 and stages["train:comirec_sa"]["epochs"] == 3
    users = stages["ingest"]["rows"]["users"]
    serving = pq.read_table(root / "recommendations").to_pandas()
    assert len(serving) == 2 * users * 20 and serving.groupby("model")["user_source_id"].nunique().eq(users).all()
    assert stages["evaluate"]["rows"]["user_metrics"] == len(pq.read_table(root / "user_metrics"))
