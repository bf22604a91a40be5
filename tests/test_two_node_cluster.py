"""A real two-node Ray cluster on this machine, the refresh job sent with `ray job submit`.

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
            "print(sum(1 for n in ray.nodes() if n['Alive']))" % address)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


def test_refresh_job_submitted_to_two_node_cluster(data_dir, tmp_path):
    pytest.importorskip("ray")
    temp_dir = tempfile.mkdtemp(prefix="rtn", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs_port, dash_port = free_port(), free_port()

    def own_ports() -> list[str]:
        """Per node: the ports Ray would otherwise take at fixed defaults (the dashboard agent's 52365
        among them), so another Ray on this machine (a local job, a benchmark) cannot collide."""
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
    address = f"127.0.0.1:{gcs_port}"
    # Ray 2.60 enables token authentication on `ray start --head`: every node and client of this
    # cluster gets the same fresh token through the environment (nothing is written to ~/.ray).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    logs = open(tmp_path / "nodes.log", "w")
    nodes = []
    try:
        nodes.append(subprocess.Popen(
            [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
             "--num-cpus=1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash_port}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
             f"--ray-client-server-port={free_port()}", *own_ports()],
            env=env, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True))
        wait_for(lambda: alive_nodes(address, env) >= 1, 120, "the head node")
        nodes.append(subprocess.Popen(
            [RAY, "start", "--block", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
             '--resources={"second_node": 1}', "--disable-usage-stats", *own_ports()],
            env=env, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True))
        wait_for(lambda: alive_nodes(address, env) == 2, 120, "the second node")

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
        for process in reversed(nodes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in nodes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        # anything the nodes spawned outside their groups carries the private temp dir in its command line
        subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)
        logs.close()
