"""A real two-node Ray cluster on this machine: the refresh job sent with `ray job submit`, and the
node that hosts the LLM engine killed in the middle of the LLM stage.

The head and the second node are started with `ray start --block` in their own process groups
and a private --temp-dir, and are always taken down in `finally` by killing those groups (so the
test never stops other Ray clusters on the machine, as `ray stop` would)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rec_core.run.local_cluster import RAY, LocalCluster, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def test_refresh_job_submitted_to_two_node_cluster(data_dir, tmp_path):
    pytest.importorskip("ray")
    cluster = LocalCluster(tmp_path / "nodes.log")
    try:
        cluster.add_node()
        env, dash_port = cluster.env, cluster.dash_port
        output = tmp_path / "runs"
        runtime_env = {"excludes": [".venv", "runs", ".git", "*.egg-info", ".pytest_cache", ".hypothesis"]}
        command = [RAY, "job", "submit", f"--address=http://127.0.0.1:{dash_port}", f"--working-dir={REPO}",
                   f"--runtime-env-json={json.dumps(runtime_env)}", "--",
                   "python", "-m", "jobs.refresh", "run_id=two-nodes", f"output_dir={output}",
                   f"data.data_dir={data_dir}", "train.num_workers=2", "train.cpus_per_worker=1",
                   "train.epochs=1", "train.max_samples_per_epoch=4000", "models=[popularity,comirec_sa]"]
        deadline = time.time() + 180
        while True:  # the head's job agent comes up some seconds after the node itself
            submit = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            if "No available agent" not in submit.stderr or time.time() > deadline:
                break
            time.sleep(5)
        print(submit.stdout[-4000:], submit.stderr[-2000:])
        assert submit.returncode == 0, submit.stderr[-2000:]
        assert "succeeded" in submit.stdout

        root = output / "two-nodes"
        manifest = json.loads((root / "manifest.json").read_text())
        assert all(stage["status"] == "done" for stage in manifest["stages"].values())
        assert set(manifest["stages"]) == {"ingest", "train:comirec_sa", "evaluate", "export", "report", "publish"}
        recs = pq.read_table(root / "recommendations").to_pandas()  # the serving lists: every user
        assert set(recs["model"]) == {"popularity", "comirec_sa"}
        assert len(recs) == 2 * manifest["stages"]["ingest"]["rows"]["users"] * 50
        metrics = pq.read_table(root / "metrics").to_pandas()
        assert metrics["value"].between(0, 1).all() and len(metrics) == 2 * 2 * 9
        assert "Test metrics" in submit.stdout  # the job printed its metrics table
    finally:
        cluster.close()


def test_the_node_of_the_llm_engine_killed_mid_stage_loses_nothing_and_resends_nothing(data_dir, tmp_path):
    """The head has no CPU, so the engine actor and every task of the stage run on the second node
    (with one CPU on the head, the engine's 1-CPU bundle could land there: seen once in CI, where the
    kill then stopped nothing and every answer arrived). That node is SIGKILLed (raylet, engine and
    all) once the first answers are in the prompt cache; the job, which then has no node for an
    engine, is stopped; a new second node joins and the rerun of the same run id sends exactly the
    prompts that had no cached answer (none twice) and groups every user. 12 users: one prompt a
    batch and at most 4 batches in the engine at once, so at most a handful are answered when the
    first one reaches the cache."""
    pytest.importorskip("vllm")
    from rec_core.llm.offline_model import default_model_dir
    from rec_core.llm.prompt_cache import PromptCache

    if not (default_model_dir() / "config.json").exists():
        pytest.fail("offline default model missing: bin/setup prepares it")
    users = 12
    output = tmp_path / "runs"
    overrides = [f"output_dir={output}", "run_id=node-lost", f"data.data_dir={data_dir}", "semantic.backend=llm",
                 f"semantic.max_users={users}", "semantic.max_items=8", "llm.max_tokens=160", "llm.batch_size=1",
                 "llm.cache_flush_rows=1"]
    cluster = LocalCluster(tmp_path / "nodes.log", head_cpus=0)
    try:
        second = cluster.add_node(cpus=2)
        env = {**cluster.env, "RAY_ADDRESS": cluster.address}
        subprocess.run([sys.executable, "-m", "jobs.ingest", *overrides], cwd=REPO, env=env, check=True,
                       capture_output=True, timeout=300)
        cache = PromptCache(output / "llm_cache")
        job = subprocess.Popen([sys.executable, "-m", "jobs.semantic", *overrides], cwd=REPO, env=env,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: len(cache) > 0 or job.poll() is not None, 600, "the first cached answers")
            assert job.poll() is None, f"the stage ended first:\n{job.stderr.read().decode()[-2000:]}"
            cluster.kill(second)
            try:  # no node can host an engine now: the job either fails or waits for one
                job.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGTERM)
                job.wait(timeout=60)
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
        # answers the engine had finished before it died may still have reached the driver: all cached
        answered = len(cache)
        assert 0 < answered < users, answered

        cluster.add_node(cpus=2)
        rerun = subprocess.run([sys.executable, "-m", "jobs.semantic", *overrides], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        stage = json.loads((output / "node-lost" / "manifest.json").read_text())["stages"]["semantic"]
        assert stage["status"] == "done"
        assert stage["llm"]["cache_hits"] == answered and stage["llm"]["sent"] == users - answered  # 0 resent
        clusters = pq.read_table(output / "node-lost" / "user_semantic_clusters").to_pandas()
        assert clusters["user_id"].nunique() == users  # 0 users lost
    finally:
        cluster.close()
