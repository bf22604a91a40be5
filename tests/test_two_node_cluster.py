"""A real two-node Ray cluster on this machine: the refresh job sent with `ray job submit`, and the
node that hosts the LLM engine killed in the middle of the LLM stage.

The head and the second node are started with `ray start --block` in their own process groups
and a private --temp-dir, and are always taken down in `finally` by killing those groups (so the
test never stops other Ray clusters on the machine, as `ray stop` would)."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(2)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def alive_nodes(address: str, env: dict) -> int:
    code = ("import ray; ray.init(address='%s', logging_level='ERROR'); "
            "print('alive-nodes', sum(1 for n in ray.nodes() if n['Alive']))" % address)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    # Ray may print its own lines (e.g. "raylet has lagging heartbeats") on stdout too
    counts = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("alive-nodes ")]
    return int(counts[-1]) if out.returncode == 0 and counts else 0


class LocalCluster:
    """A head and further nodes, each `ray start --block` in its own process group with private
    ports and temp dir; `kill(node)` SIGKILLs one node's processes (a dead machine); `close()` takes
    everything down."""

    def __init__(self, log_path: Path, head_cpus: int = 1):
        self.temp_dir = tempfile.mkdtemp(prefix="rtn", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.gcs_port, self.dash_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        # Ray 2.60 enables token authentication on `ray start --head`: every node and client of this
        # cluster gets the same fresh token through the environment (nothing is written to ~/.ray).
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env.pop("RAY_ADDRESS", None)
        self.logs = open(log_path, "w")
        self.nodes: list[subprocess.Popen] = []
        self.killed: list[subprocess.Popen] = []
        self._start([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}",
                     f"--num-cpus={head_cpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dash_port}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                     f"--ray-client-server-port={free_port()}", *self.own_ports()])
        wait_for(lambda: alive_nodes(self.address, self.env) >= 1, 120, "the head node")

    @staticmethod
    def own_ports() -> list[str]:
        """Per node: the ports Ray would otherwise take at fixed defaults (the dashboard agent's 52365
        among them), so another Ray on this machine (a local job, a benchmark) cannot collide."""
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]

    def _start(self, command: list[str]) -> subprocess.Popen:
        node = subprocess.Popen(command, env=self.env, stdout=self.logs, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.nodes.append(node)
        return node

    def add_node(self, cpus: int = 1, resources: str = '{"second_node": 1}') -> subprocess.Popen:
        node = self._start([RAY, "start", "--block", f"--address={self.address}", "--node-ip-address=127.0.0.1",
                            f"--num-cpus={cpus}", f"--resources={resources}", "--disable-usage-stats",
                            *self.own_ports()])
        live = len(self.nodes) - len(self.killed)
        wait_for(lambda: alive_nodes(self.address, self.env) == live, 120, "the new node")
        return node

    def kill(self, node: subprocess.Popen) -> None:
        """SIGKILL every process of the node: `ray start`, the raylet, its workers (an engine actor
        among them) and agents, found as the descendants of `ray start` (workers may leave its
        process group), all at once, as when the machine dies."""
        import psutil

        processes = psutil.Process(node.pid).children(recursive=True)
        os.killpg(node.pid, signal.SIGKILL)
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        node.wait(timeout=30)
        self.killed.append(node)
        live = len(self.nodes) - len(self.killed)
        wait_for(lambda: alive_nodes(self.address, self.env) == live, 120, "the cluster to see the node dead")

    def close(self) -> None:
        for process in reversed(self.nodes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.nodes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        # anything the nodes spawned outside their groups carries the private temp dir in its command line
        subprocess.run(["pkill", "-9", "-f", self.temp_dir], check=False)
        self.logs.close()


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
    kill then stopped nothing and all 24 answers arrived). That node is SIGKILLed (raylet, engine and all) once the first answers are in the prompt cache; the
    job, which then has no node for an engine, is stopped; a new second node joins and the rerun
    of the same run id sends exactly the prompts that had no cached answer (none twice) and groups
    every user."""
    pytest.importorskip("vllm")
    from rec_core.llm.offline_model import default_model_dir
    from rec_core.llm.prompt_cache import PromptCache

    if not (default_model_dir() / "config.json").exists():
        pytest.fail("offline default model missing: bin/setup prepares it")
    users = 24
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
                job.wait(timeout=30)
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
