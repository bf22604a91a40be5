"""A Ray cluster of several nodes on one machine, for the multi-node tests and the scale benchmark's
`--nodes`: each node is `ray start --block` in its own process group with private ports and temp
dir, so it never collides with, or stops, another Ray on the machine (as `ray stop` would). Ray
2.60 enables token authentication on `ray start --head`: every node and client of the cluster gets
the same fresh token through `env` (nothing is written to ~/.ray)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every socket stays bound until all are chosen (ports taken one
    at a time can repeat, and Ray refuses a node whose components share a port)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for(predicate, timeout, what, process: subprocess.Popen | None = None, log_path: Path | None = None):
    """Polls `predicate` every 2 s; fails at once when `process` (the node's `ray start`) has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"`ray start` exited with {process.returncode} while waiting for {what} "
                               f"(its output: {log_path})")
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
        self.gcs_port, self.dash_port, client_port, *own_ports = free_ports(7)
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
        head = self._start([RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                            f"--port={self.gcs_port}", f"--num-cpus={head_cpus}", "--include-dashboard=true",
                            "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dash_port}",
                            f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                            f"--ray-client-server-port={client_port}", *self.own_ports(own_ports)])
        wait_for(lambda: alive_nodes(self.address, self.env) >= 1, 120, "the head node", head, log_path)

    @staticmethod
    def own_ports(ports: list[int] | None = None) -> list[str]:
        """Per node: the ports Ray would otherwise take at fixed defaults (the dashboard agent's 52365
        among them), so another Ray on this machine (a local job, a benchmark) cannot collide; four
        distinct ones (`ports`, default: fresh)."""
        agent_listen, agent_grpc, metrics, runtime_env = ports or free_ports(4)
        return [f"--dashboard-agent-listen-port={agent_listen}", f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"]

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
        wait_for(lambda: alive_nodes(self.address, self.env) == live, 120, "the new node", node, self.logs.name)
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
