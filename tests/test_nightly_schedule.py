"""Offline checks of the nightly schedule in cluster/ (no Kubernetes needed).

- cluster/raycronjob.yaml (KubeRay RayCronJob) and the RayJobs of cluster/rayjob.yaml and
  cluster/cronjob.yaml are validated with jsonschema against the KubeRay CRD excerpt in
  tests/schemas/ (unknown fields are errors), their pod templates and every plain Kubernetes object
  (CronJob, ConfigMap, RBAC, the volume claim) against the Kubernetes v1.37 schemas of
  kubernetes-validate, strictly.
- The two nightly manifests run the same RayJob, whose entrypoint is a valid configuration of the job
  with the previous-run wiring, on the image that cluster/Dockerfile builds from the pinned Ray.
- The CronJob's submit script runs against a fake kubectl: it fails the night unless the Ray job
  SUCCEEDED (the quality gate's refusal is a FAILED Ray job) and prunes old RayJobs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from rec_core.run.config import load_config

jsonschema = pytest.importorskip("jsonschema")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY_SCHEMA = json.loads((ROOT / "tests" / "schemas" / "kuberay-v1.6-rayjob-raycronjob.schema.json").read_text())
KUBERNETES_VERSION = "1.37.0"
IMAGE_ROOT = "/home/ray/rec"  # where cluster/Dockerfile puts the project


def documents(name: str) -> list[dict]:
    with (CLUSTER / name).open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def one(name: str, kind: str) -> dict:
    found = [doc for doc in documents(name) if doc.get("kind") == kind]
    assert len(found) == 1, f"{name}: expected one {kind}, found {len(found)}"
    return found[0]


def cronjob_rayjob() -> dict:
    """The RayJob the CronJob's ConfigMap holds."""
    return yaml.safe_load(one("cronjob.yaml", "ConfigMap")["data"]["rayjob.yaml"])


def rayjob_specs() -> dict[str, dict]:
    return {"rayjob.yaml": one("rayjob.yaml", "RayJob")["spec"],
            "raycronjob.yaml": one("raycronjob.yaml", "RayCronJob")["spec"]["jobTemplate"],
            "cronjob.yaml": cronjob_rayjob()["spec"]}


def pod_templates(spec: dict) -> dict[str, dict]:
    cluster = spec["rayClusterSpec"]
    templates = {"head": cluster["headGroupSpec"]["template"], "submitter": spec.get("submitterPodTemplate")}
    templates.update({f"worker {g['groupName']}": g["template"] for g in cluster.get("workerGroupSpecs", [])})
    return {where: template for where, template in templates.items() if template is not None}


def kuberay_errors(document: dict) -> list[str]:
    schema = {"$defs": KUBERAY_SCHEMA["$defs"], "$ref": f"#/$defs/{document['kind']}"}  # RayCronJob or RayJob
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(document)]


def pinned_dependencies() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for dependency in project["dependencies"]:
        name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", dependency).groups()
        pins[name.lower()] = version
    return pins


# ------------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("name,kind", [("raycronjob.yaml", "RayCronJob"), ("rayjob.yaml", "RayJob")])
def test_kuberay_objects_match_the_crd(name, kind):
    assert kuberay_errors(one(name, kind)) == []


def test_the_cronjobs_rayjob_matches_the_crd():
    assert kuberay_errors(cronjob_rayjob()) == []


def test_the_crd_check_can_fail():
    """The excerpt rejects what the API server's strict validation would: an unknown field, a wrong
    type, an enum outside its values, a missing required field."""
    cron = one("raycronjob.yaml", "RayCronJob")
    for path, value, expected in ((("spec", "concurrencyPolicy"), "Forbid", "Additional properties"),
                                  (("spec", "jobTemplate", "backoffLimit"), "2", "is not of type 'integer'"),
                                  (("spec", "jobTemplate", "rayClusterSpec", "authOptions", "mode"), "tokens",
                                   "is not one of"),
                                  (("spec", "jobTemplate", "entrypiont"), "python", "Additional properties")):
        broken = copy.deepcopy(cron)
        target = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert any(expected in error for error in kuberay_errors(broken)), (path, kuberay_errors(broken))
    broken = copy.deepcopy(cron)
    del broken["spec"]["schedule"]
    assert any("'schedule' is a required property" in error for error in kuberay_errors(broken))


@pytest.mark.parametrize("manifest", ["rayjob.yaml", "raycronjob.yaml", "cronjob.yaml"])
def test_pod_templates_match_the_kubernetes_schema(manifest):
    for where, template in pod_templates(rayjob_specs()[manifest]).items():
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
        try:
            kubernetes_validate.validate(wrapped, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{manifest} {where}: {error.message} at {'/'.join(map(str, error.path))}")


@pytest.mark.parametrize("name", ["cronjob.yaml", "shared-volume.yaml"])
def test_kubernetes_objects_match_the_kubernetes_schema(name):
    for document in documents(name):
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name} {document['kind']}: {error.message} at {'/'.join(map(str, error.path))}")


def test_the_kubernetes_check_can_fail():
    for key, value in (("successfulJobsHistoryLimit", "three"), ("concurrency", "Forbid")):  # a type, a name
        cron = copy.deepcopy(one("cronjob.yaml", "CronJob"))
        cron["spec"][key] = value
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(cron, KUBERNETES_VERSION, strict=True)


# ------------------------------------------------------------------------------------ the night


def test_both_schedules_run_the_same_rayjob_nightly():
    cron, plain = one("raycronjob.yaml", "RayCronJob"), one("cronjob.yaml", "CronJob")
    assert cronjob_rayjob()["spec"] == cron["spec"]["jobTemplate"], "cronjob.yaml's RayJob drifted from raycronjob.yaml"
    assert "generateName" in cronjob_rayjob()["metadata"], "one RayJob per night needs generateName"
    for schedule in (cron["spec"], plain["spec"]):
        assert schedule["schedule"] == "0 2 * * *" and schedule["timeZone"] == "Etc/UTC"
    assert plain["spec"]["concurrencyPolicy"] == "Forbid"


def test_the_nightly_entrypoint_is_a_valid_job_configuration():
    spec = one("raycronjob.yaml", "RayCronJob")["spec"]["jobTemplate"]
    words = shlex.split(spec["entrypoint"])
    assert words[:3] == ["python", "-m", "jobs.refresh"] and words[3] == "--config", words
    config_path = Path(words[4])
    assert config_path.is_relative_to(IMAGE_ROOT) and (ROOT / config_path.relative_to(IMAGE_ROOT)).is_file()
    overrides = dict(word.split("=", 1) for word in words[5:])
    assert overrides["run_id"] == "nightly-{date}", "a retry of the night must resume the same run"
    assert overrides["previous_run"] == "latest"
    assert overrides.get("publish.enabled", "true") == "true", "the quality gate must run"
    config = load_config(ROOT / config_path.relative_to(IMAGE_ROOT), words[5:])  # every key exists and parses
    mounts = {m["mountPath"] for t in pod_templates(spec).values() for c in t["spec"]["containers"]
              for m in c.get("volumeMounts", [])}
    for path in (config["output_dir"], config["data"]["data_dir"]):
        assert any(path.startswith(mount + "/") for mount in mounts), f"{path} is on no mounted volume"
    assert spec["backoffLimit"] >= 1 and spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"]["authOptions"]["mode"] == "token"


def test_every_rayjob_turns_token_auth_on():
    for manifest, spec in rayjob_specs().items():
        assert spec["rayClusterSpec"].get("authOptions", {}).get("mode") == "token", manifest


def test_the_nightly_image_is_the_dockerfiles_on_the_pinned_ray():
    pins = pinned_dependencies()
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert base == f"rayproject/ray:{pins['ray']}-py311-cpu"
    spec = one("raycronjob.yaml", "RayCronJob")["spec"]["jobTemplate"]
    assert spec["rayClusterSpec"]["rayVersion"] == pins["ray"]
    images = {c["image"] for t in pod_templates(spec).values() for c in t["spec"]["containers"]}
    assert len(images) == 1 and not images.pop().startswith("rayproject/"), "every pod runs the project image"
    baked = {name.lower(): version for name, version in re.findall(r'"([A-Za-z0-9_.\-]+)==([^"]+)"', dockerfile)}
    for name, version in pins.items():
        if name != "ray":  # from the base image
            assert baked.get(name) == version, f"cluster/Dockerfile: {name} {baked.get(name)}, pyproject {version}"
    assert dockerfile.index('"torch==') < dockerfile.index("pip install --no-cache-dir --no-deps -e .")
    assert re.search(r"^ARG CODE_VERSION", dockerfile, re.M) and '> CODE_VERSION' in dockerfile


# ------------------------------------------------------------------------------------ submit script

FAKE_KUBECTL = """#!/bin/sh
echo "$*" >> "$KUBECTL_LOG"
case "$1 $2" in
  "create -f") echo rayjob.ray.io/rec-nightly-abcde ;;
  "get rayjob.ray.io/rec-nightly-abcde")
    case "$4" in
      *jobDeploymentStatus*)
        n=$(cat "$STATE_DIR/polls" 2>/dev/null || echo 0); echo $((n + 1)) > "$STATE_DIR/polls"
        if [ "$n" -lt 2 ]; then printf Running; else printf "$FINAL_DEPLOYMENT"; fi ;;
      *jobStatus*) printf "$FINAL_JOB_STATUS" ;;
    esac ;;
  "get rayjobs") for i in 1 2 3 4; do echo rayjob.ray.io/rec-nightly-old$i; done ;;
  "delete rayjob.ray.io/rec-nightly-old1"|"delete rayjob.ray.io/rec-nightly-old2") ;;
  *) echo "unexpected kubectl $*" >&2; exit 9 ;;
esac
"""


def run_submit(tmp_path, final_deployment: str, final_status: str) -> tuple[int, str, list[str]]:
    data = one("cronjob.yaml", "ConfigMap")["data"]
    (tmp_path / "submit.sh").write_text(data["submit.sh"])
    (tmp_path / "rayjob.yaml").write_text(data["rayjob.yaml"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBECTL_LOG": str(tmp_path / "calls"),
           "STATE_DIR": str(tmp_path), "FINAL_DEPLOYMENT": final_deployment, "FINAL_JOB_STATUS": final_status,
           "RAYJOB_TEMPLATE": str(tmp_path / "rayjob.yaml"), "POLL_SECONDS": "0", "KEEP_RAYJOBS": "2"}
    done = subprocess.run(["sh", str(tmp_path / "submit.sh")], env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr, (tmp_path / "calls").read_text().splitlines()


def test_submit_script_succeeds_only_when_the_ray_job_succeeded(tmp_path):
    (tmp_path / "ok").mkdir()
    code, output, calls = run_submit(tmp_path / "ok", "Complete", "SUCCEEDED")
    assert code == 0, output
    assert calls[0] == f"create -f {tmp_path / 'ok' / 'rayjob.yaml'} -o name"
    assert sum("jobDeploymentStatus" in call for call in calls) == 3, calls  # polled until it ended
    assert [c for c in calls if c.startswith("delete")] == ["delete rayjob.ray.io/rec-nightly-old1",
                                                            "delete rayjob.ray.io/rec-nightly-old2"]
    (tmp_path / "refused").mkdir()
    code, output, _ = run_submit(tmp_path / "refused", "Complete", "FAILED")  # e.g. the quality gate's exit 3
    assert code != 0 and "jobStatus=FAILED" in output
    (tmp_path / "failed").mkdir()
    code, output, _ = run_submit(tmp_path / "failed", "Failed", "FAILED")  # retries used up
    assert code != 0 and "jobDeploymentStatus=Failed" in output
