"""Publishing a finished run: the quality gate, the `latest` pointer, the `_SUCCESS` marker, retention.

Downstream systems read `<output_dir>/latest/...`. A run replaces yesterday's publication only if
its validation metric (`publish.metric` at `publish.k`) did not drop by more than
`publish.tolerance` (relative) for any model that both runs trained; otherwise `GateRefused` is
raised (the job exits with code 3), the run's manifest says why, and `latest` keeps pointing at
the run published before. Validation, not test: the gate must not peek at the figures a report
claims.

Publishing writes `<run>/_SUCCESS`, records `publish` in the run's manifest, and then replaces the
`latest` symlink atomically (a new link under a temporary name, renamed over the old one), so a
reader sees either yesterday's run or today's, never neither. An object store (output_dir=s3://...)
has no links: there `latest` is an object holding the published run's id (one upload, so again
yesterday's or today's), and a reader reads it, then `<output_dir>/<that id>/`. `publish.keep_runs` > 0 deletes
the oldest runs beyond that number, except published ones (they have `_SUCCESS`), the run being
published, and any run with a stage still marked running.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from rec_core.run.config import LATEST, ConfigError
from rec_core.run.directory import Run, utc_now
from rec_core.storage.location import Location, read_parquet

log = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"


class GateRefused(RuntimeError):
    """The run is worse than the published one by more than the tolerance; it is not published."""


@dataclass(frozen=True)
class GateCheck:
    model: str
    metric: str  # e.g. "recall@50", validation split
    published: float
    candidate: float
    floor: float  # published * (1 - tolerance)

    @property
    def passed(self) -> bool:
        return self.candidate >= self.floor


def published_run(output_dir: "str | os.PathLike | Location") -> Location | None:
    """The run `latest` points at, or None before the first publication."""
    output_dir = Location.of(output_dir)
    pointer = output_dir / LATEST
    if not output_dir.is_local:
        if not pointer.is_file():
            return None
        target = output_dir / pointer.read_text().strip()
    elif not Path(pointer.path).is_symlink():
        if pointer.exists():
            raise ConfigError(f"{pointer} exists but is not the publication symlink; move it away")
        return None
    else:
        target = Location.of(Path(pointer.path).resolve())
    if not (target / SUCCESS_MARKER).is_file():
        raise ConfigError(f"{pointer} points at {target}, which has no {SUCCESS_MARKER}: repair the pointer")
    return target


def validation_metric(metrics: pd.DataFrame, metric: str, k: int) -> dict[str, float]:
    rows = metrics[(metrics["split"] == "valid") & (metrics["metric"] == metric) & (metrics["k"] == k)]
    return dict(zip(rows["model"], rows["value"].astype(float)))


def gate_checks(candidate: pd.DataFrame, published: pd.DataFrame, metric: str, k: int,
                tolerance: float) -> list[GateCheck]:
    """One check per model present in both runs' validation metrics."""
    now, before = validation_metric(candidate, metric, k), validation_metric(published, metric, k)
    return [GateCheck(model, f"{metric}@{k}", before[model], now[model], before[model] * (1 - tolerance))
            for model in now if model in before]


def publish(run: Run) -> dict:
    """Gate `run` against the published run of its output_dir and publish it; the manifest record."""
    settings = run.config["publish"]
    output_dir = run.root.parent
    k = settings["k"] or max(run.config["eval"]["ks"])
    previous = published_run(output_dir)
    record = {"at": utc_now(), "metric": f"{settings['metric']}@{k}", "tolerance": settings["tolerance"],
              "against": previous.name if previous else None, "checks": []}
    if previous is not None and previous != run.root:
        before = json.loads((previous / "manifest.json").read_text())
        if before["config"]["data"]["dataset"] != run.config["data"]["dataset"]:
            raise ConfigError(f"the published run {previous.name} is on data set {before['config']['data']['dataset']}, "
                              f"this one on {run.config['data']['dataset']}: use one output_dir per data set")
        checks = gate_checks(run.read_table("metrics"), read_parquet(previous / "metrics").to_pandas(), settings["metric"],
                             k, settings["tolerance"])
        record["checks"] = [{**asdict(check), "passed": check.passed} for check in checks]
        failed = [check for check in checks if not check.passed]
        if failed:
            record["status"] = "refused"
            run.manifest["publish"] = record
            run.save_manifest()
            raise GateRefused(
                f"run {run.run_id} not published: validation {record['metric']} dropped more than "
                f"{settings['tolerance']:.0%} against the published run {previous.name} for "
                + ", ".join(f"{c.model} ({c.candidate:.4f} < {c.floor:.4f}, published {c.published:.4f})"
                            for c in failed)
                + f"; {LATEST} still points at {previous.name}")
    (run.root / SUCCESS_MARKER).write_text(record["at"] + "\n")
    record["status"] = "published"
    run.manifest["publish"] = record
    run.save_manifest()
    _point_latest_at(output_dir, run.root)
    record["deleted_runs"] = prune_runs(output_dir, settings["keep_runs"], keep=run.root)
    run.save_manifest()
    log.info("published run %s as %s (%d gate checks passed)", run.run_id, output_dir / LATEST, len(record["checks"]))
    return record


def _point_latest_at(output_dir: Location, target: Location) -> None:
    if not output_dir.is_local:  # an object holding the run id, replaced by one upload
        (output_dir / LATEST).write_text(target.name + "\n")
        return
    temporary = Path(output_dir.path) / f".{LATEST}.{os.getpid()}"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    temporary.symlink_to(target.name, target_is_directory=True)  # relative: the folder may be moved
    os.replace(temporary, Path(output_dir.path) / LATEST)


def runs_of(output_dir: "str | os.PathLike | Location") -> list[tuple[Location, dict]]:
    """(folder, manifest) of every run in `output_dir`, newest first by creation time; the pointer,
    the caches and folders whose manifest cannot be read are not runs here."""
    runs = []
    for folder in Location.of(output_dir).iterdir():
        manifest = folder / "manifest.json"
        if folder.name == LATEST or not manifest.is_file():
            continue
        try:
            runs.append((folder, json.loads(manifest.read_text())))
        except json.JSONDecodeError:
            continue  # unreadable: never act on what we cannot identify
    return sorted(runs, key=lambda entry: entry[1].get("created", ""), reverse=True)


def prune_runs(output_dir: Location, keep_runs: int, keep: Location) -> list[str]:
    """Delete the runs beyond the newest `keep_runs` (0: none), sparing published and unfinished ones."""
    if keep_runs <= 0:
        return []
    deleted = []
    for folder, info in runs_of(output_dir)[keep_runs:]:
        running = any(stage.get("status") == "running" for stage in info.get("stages", {}).values())
        if folder == keep or (folder / SUCCESS_MARKER).exists() or running:
            continue
        folder.remove_tree()
        deleted.append(folder.name)
    if deleted:
        log.info("retention (publish.keep_runs=%d): deleted runs %s", keep_runs, ", ".join(deleted))
    return deleted
