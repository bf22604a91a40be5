"""The run directory: Parquet tables under <output_dir>/<run_id>/ and manifest.json.

manifest.json holds the config, the code version, the input data's fingerprint, and per stage
its status ("running", "done", "failed"), row counts, timings and notes. A stage whose status is
"done" is skipped when the same run id runs again; a "running" or "failed" stage is redone
(training resumes from its last Ray Train checkpoint).

A run's identity is its pinned settings (PINNED_SECTIONS), the code version and the input data:
a rerun under the same run id with other settings, other code or changed data files is refused
(finished stages would otherwise be reused as if they came from the new ones). The data
fingerprint is taken by ingest from the files the loader read (size, mtime and a SHA-256 of their
contents) and checked against those same files whenever the run is opened again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rec_core.run.config import ConfigError

log = logging.getLogger(__name__)

# Config sections a run is bound to: everything that shapes one of its tables (the data and its
# splits, the semantic and crowd tables, the trained models, the metrics). A rerun with the same run
# id must not change them, or finished stages would be reused with other settings. Free to change:
# `models` (may grow: new models are trained, finished ones kept), `output_dir`, `run_id`, and the
# LLM engine's resources (replicas, batch size, CPUs, cache location), which do not change answers.
PINNED_SECTIONS = ("seed", "data", "split", "train", "semantic", "align", "crowd", "contrast", "graph", "desc", "session", "distill", "eval",
                   "llm.model", "llm.max_tokens", "llm.temperature", "llm.max_model_len", "previous_run", "incremental")

# Sections that only the train stage and those after it read. Two runs whose configs differ in
# nothing else produce the same tables before training, so `fork_upstream` may share them.
TRAINING_SECTIONS = ("train", "align", "contrast", "desc", "session", "distill")
UPSTREAM_STAGES = ("ingest", "semantic", "synthesize", "crowd_semantic", "describe")


CODE_VERSION_ENV = "LLMREC_CODE_VERSION"
CODE_VERSION_FILE = "CODE_VERSION"  # beside pyproject.toml; written by an image build (cluster/Dockerfile)
UNKNOWN_VERSION = "unknown"
RUN_DATE_FIELD = "{date}"  # in a run id: the UTC date, YYYYMMDD (run_id=nightly-{date})


def code_version() -> str:
    """The git commit of the checkout (`-dirty.<hash of the diff>` with uncommitted changes to tracked
    files); where there is no .git (`ray job submit --working-dir` uploads none, an image has
    none): $LLMREC_CODE_VERSION, else the CODE_VERSION file, else "unknown"."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        diff = subprocess.run(["git", "-C", str(root), "diff", "HEAD"], capture_output=True, timeout=30).stdout
        return commit + (f"-dirty.{hashlib.sha256(diff).hexdigest()[:12]}" if diff else "")
    except (OSError, subprocess.SubprocessError):
        pass
    if os.environ.get(CODE_VERSION_ENV, "").strip():
        return os.environ[CODE_VERSION_ENV].strip()
    stamped = root / CODE_VERSION_FILE
    if stamped.is_file() and stamped.read_text().strip():
        return stamped.read_text().strip()
    return UNKNOWN_VERSION


def data_fingerprint(paths: list[str]) -> dict:
    """Size, mtime and SHA-256 of each input file, and one SHA-256 over all of them."""
    files, overall = [], hashlib.sha256()
    for path in sorted(paths):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        stat = os.stat(path)
        files.append({"path": path, "size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest.hexdigest()})
        overall.update(f"{path}\0{digest.hexdigest()}\0".encode())
    return {"files": files, "sha256": overall.hexdigest()}


def _changed_files(recorded: dict) -> list[str]:
    """The recorded input files that are gone or whose content differs now."""
    paths = [entry["path"] for entry in recorded["files"]]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        return [f"{path} (missing)" for path in missing]
    now = {entry["path"]: entry["sha256"] for entry in data_fingerprint(paths)["files"]}
    return [entry["path"] for entry in recorded["files"] if now[entry["path"]] != entry["sha256"]]


class Run:
    """One run: its folder, its tables and its manifest."""

    def __init__(self, config: dict):
        self.config = config
        if not config.get("run_id"):
            config["run_id"] = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        elif RUN_DATE_FIELD in str(config["run_id"]):  # one run per night: a retry of the night resumes it
            today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
            config["run_id"] = str(config["run_id"]).replace(RUN_DATE_FIELD, today)
        self.run_id = str(config["run_id"])
        self.root = Path(config["output_dir"]).expanduser().resolve() / self.run_id
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as error:
            raise ConfigError(f"output_dir={config['output_dir']}: cannot write the run folder {self.root} "
                              f"({error.strerror or error}); give a writable folder") from None
        self.manifest_path = self.root / "manifest.json"
        if self.manifest_path.exists():
            try:
                self.manifest = json.loads(self.manifest_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ConfigError(f"{self.manifest_path} is corrupt ({error}): the run cannot be resumed; "
                                  "start a new run_id (or restore the file)") from None
            changed = differing_settings(self.manifest["config"], config, PINNED_SECTIONS)
            if changed:
                raise ConfigError(f"run {self.run_id} in {self.root.parent} was made with different "
                                  f"{', '.join(changed)} settings; use a new run_id (finished stages "
                                  "would otherwise be reused with the old settings)")
            self._check_identity()
        else:
            self.manifest = {"run_id": self.run_id, "created": utc_now(), "stages": {},
                             "code_version": code_version()}
        self.manifest["config"] = config
        self.save_manifest()

    def _check_identity(self) -> None:
        """Refuse to continue a run with other code or changed input data."""
        made_with, now = self.manifest.get("code_version", UNKNOWN_VERSION), code_version()
        if UNKNOWN_VERSION in (made_with, now):
            if made_with != now:
                log.warning("run %s: code version %s, now %s: cannot tell whether the code changed",
                            self.run_id, made_with, now)
        elif made_with != now:
            raise ConfigError(f"run {self.run_id} in {self.root.parent} was made by code {made_with}, this is "
                              f"{now}; use a new run_id (its finished stages came from the other code)")
        recorded = self.manifest.get("data_fingerprint")
        if recorded and (changed := _changed_files(recorded)):
            raise ConfigError(f"run {self.run_id} in {self.root.parent}: its input data changed since ingest "
                              f"({', '.join(changed)}); use a new run_id for the new data")

    def record_data(self, paths: list[str]) -> dict:
        """Ingest's record of the files it read (the run's data identity)."""
        self.manifest["data_fingerprint"] = data_fingerprint(paths)
        self.save_manifest()
        return self.manifest["data_fingerprint"]

    # ---------------------------------------------------------------- tables

    def table_path(self, name: str) -> Path:
        return self.root / name

    def write_table(self, name: str, frame: pd.DataFrame) -> int:
        """Write `frame` as <run>/<name>/part-0.parquet (atomically: temp file, then rename)."""
        folder = self.table_path(name)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "part-0.parquet"
        temporary = folder / ".part-0.parquet.tmp"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), temporary)
        os.replace(temporary, target)
        return len(frame)

    def read_table(self, name: str) -> pd.DataFrame:
        writers = [stage for stage, record in self.manifest["stages"].items() if name in record.get("rows", {})]
        return read_run_table(self.root, name, writers[0] if writers else None)

    def has_table(self, name: str) -> bool:
        return (self.table_path(name) / "part-0.parquet").exists()

    # ---------------------------------------------------------------- stages

    def stage_done(self, stage: str) -> bool:
        return self.manifest["stages"].get(stage, {}).get("status") == "done"

    def stage_current(self, stage: str) -> bool:
        """Done, and for a stage downstream of training (it covers every model: evaluate, export,
        report, publish) done for the models configured now: a model added to a finished run is
        evaluated and exported, not skipped as "already done"."""
        if not self.stage_done(stage):
            return False
        return stage in UPSTREAM_STAGES or self.manifest["stages"][stage].get("models") == list(self.config["models"])

    @contextmanager
    def stage(self, name: str):
        """Records status, timing and the configured models of a stage; yields a dict for row counts
        and notes."""
        record = {"status": "running", "started": utc_now(), "models": list(self.config["models"])}
        self.manifest["stages"][name] = record
        self.save_manifest()
        began = time.perf_counter()
        info: dict = {}
        try:
            yield info
        except BaseException as error:
            record.update(status="failed", error=f"{type(error).__name__}: {error}",
                          seconds=round(time.perf_counter() - began, 2), **info)
            self.save_manifest()
            raise
        record.update(status="done", finished=utc_now(), seconds=round(time.perf_counter() - began, 2), **info)
        self.save_manifest()
        log.info("stage %s done in %.1f s", name, record["seconds"])

    def save_manifest(self) -> None:
        temporary = self.manifest_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.manifest, indent=2, default=str))
        os.replace(temporary, self.manifest_path)


def read_run_table(root: Path, name: str, writer: str | None = None) -> pd.DataFrame:
    """Table `name` of the run in folder `root` (also of a run this process does not own); a table
    that cannot be read is a ConfigError naming it and the stage that wrote it (`writer`)."""
    folder = Path(root) / name
    if not folder.is_dir():
        raise FileNotFoundError(f"table '{name}' not found in run {root}; run the stage that writes it")
    try:
        return pq.read_table(folder).to_pandas()
    except (pa.ArrowException, OSError) as error:
        stage = f"stage {writer}" if writer else "the stage that writes it"
        raise ConfigError(f"table '{name}' of run {root} cannot be read ({error}): it is damaged; {stage} must "
                          f"run again (a new run_id, or delete {folder} and the stage's manifest entry)") from None


def text_cache_folder(config: dict) -> Path:
    """The text-embedding cache (rec_core.text.encoder), shared by the stages and runs of an output_dir."""
    return Path(config["output_dir"]).expanduser().resolve() / "text_embedding_cache"


def fork_upstream(source: Path, config: dict) -> Run:
    """A new run for `config` starting with the finished stages before training of the run in
    `source` (their tables copied, their manifest records kept, `forked_from` noted), so that a sweep
    of training settings computes ingest, semantic and crowd tables once. Refused unless the two
    configs agree on every pinned section outside TRAINING_SECTIONS (the sections those stages
    read), and unless the new run id is unused."""
    old = json.loads((source / "manifest.json").read_text())
    differing = differing_settings(old["config"], config,
                                   [key for key in PINNED_SECTIONS if key.split(".")[0] not in TRAINING_SECTIONS])
    if differing:
        raise ConfigError(f"cannot share the stages of {source}: its {', '.join(differing)} settings differ "
                          f"(only the {', '.join(TRAINING_SECTIONS)} sections may)")
    run = Run(config)
    if run.manifest["stages"]:
        raise ConfigError(f"run {run.run_id} already has stages; fork into a new run id")
    for stage in UPSTREAM_STAGES:
        record = old["stages"].get(stage, {})
        if record.get("status") != "done":
            continue
        for table in record.get("rows", {}):
            if (source / table).is_dir():
                shutil.copytree(source / table, run.table_path(table), dirs_exist_ok=True)
        run.manifest["stages"][stage] = {**record, "forked_from": str(source)}
    if "data_fingerprint" in old:  # the forked tables came from these files
        run.manifest["data_fingerprint"] = old["data_fingerprint"]
    run.save_manifest()
    return run


def differing_settings(before: dict, now: dict, keys) -> list[str]:
    """The dotted keys (`seed`, `llm.model`, ...) whose values differ between two configs."""
    return [key for key in keys if json.dumps(_lookup(before, key), sort_keys=True, default=str)
            != json.dumps(_lookup(now, key), sort_keys=True, default=str)]


def _lookup(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
