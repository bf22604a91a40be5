"""The run directory: Parquet tables under <output_dir>/<run_id>/ and manifest.json.

manifest.json holds the config, the code version, the input data's fingerprint, and per stage
its status ("running", "done", "failed"), row counts, timings and notes. A stage whose status is
"done" is skipped when the same run id runs again, but only while what it wrote is intact and what
it read is unchanged (see "Integrity"); a "running" or "failed" stage is redone (training resumes from
its last Ray Train checkpoint). Each stage's record keeps the configuration it ran under (`config`):
the top-level `config` is the latest invocation's.

Integrity: every table and model file a stage writes is registered in `manifest.outputs` with its
SHA-256 and size, and each stage records the checksums of the outputs of earlier stages it could
read (`inputs`). A read checks the file against its checksum (a damaged or truncated table is an
error naming the stage to rerun, never silently used); a finished stage is skipped only if its
outputs still match and its inputs are the ones it ran on, else it runs again.

Storage: `output_dir` is a local folder or an object-store URI (`s3://bucket/runs`, `gs://...`;
rec_core.storage.location), so a cluster without a shared POSIX volume keeps its runs in a bucket;
the run's root is a Location, and every table, the manifest and the model files go through it.

One driver per run: the first opener of a run folder holds an exclusive lock on `<run>/.lock`
(flock: the kernel releases it when that process ends, also on SIGKILL, so a dead driver never
holds it). A second driver on the same run id refuses at once, naming the holder. On NFS the lock
is a POSIX byte-range lock (Linux emulates flock so); other shared file systems must support one.
An object store has no locks: there `.lock` is a lease, an object naming the driver that a thread
of it rewrites every LEASE_RENEW_SECONDS; another driver refuses while the lease is younger than
LEASE_SECONDS, and takes it over when it is older (a killed driver's run can be resumed after
that long; the nodes' clocks are taken to agree within seconds). Two drivers starting within the
same second can both write it; each reads it back after LEASE_SETTLE_SECONDS and the one whose
token is not there refuses (best effort: object stores without conditional writes allow no more).

A run's identity is its pinned settings (PINNED_SECTIONS), the code version and the input data:
a rerun under the same run id with other settings, other code or changed data files is refused
(finished stages would otherwise be reused as if they came from the new ones). The data
fingerprint is taken by ingest from the files the loader read (size, mtime and a SHA-256 of their
contents) and checked against those same files whenever the run is opened again.
"""

from __future__ import annotations

import atexit
import copy
import datetime
import fcntl
import hashlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rec_core.run.config import ConfigError
from rec_core.storage.location import Location, read_parquet, write_parquet

log = logging.getLogger(__name__)

# Config sections a run is bound to: everything that shapes one of its tables (the data and its
# splits, the semantic and crowd tables, the trained models, the metrics). A rerun with the same run
# id must not change them, or finished stages would be reused with other settings. Free to change:
# `models` (may grow: new models are trained, finished ones kept), `output_dir`, `run_id`, the
# caches' places (`text_cache_dir`, `llm.cache_dir`) and the LLM engine's resources (replicas, batch
# size, CPUs), which do not change answers.
PINNED_SECTIONS = ("seed", "data", "split", "train", "semantic", "align", "crowd", "contrast", "graph", "desc", "session", "distill", "eval",
                   "llm.model", "llm.max_tokens", "llm.temperature", "llm.max_model_len", "previous_run", "incremental")

# Sections that only the train stage and those after it read. Two runs whose configs differ in
# nothing else produce the same tables before training, so `fork_upstream` may share them.
TRAINING_SECTIONS = ("train", "align", "contrast", "desc", "session", "distill")
UPSTREAM_STAGES = ("ingest", "semantic", "synthesize", "crowd_semantic", "describe")
TABLE_FILE = "part-0.parquet"
PART_GLOB = "part-*.parquet"  # a table's files: one (TABLE_FILE), or one per shard (Run.sharded_table)


CODE_VERSION_ENV = "LLMREC_CODE_VERSION"
CODE_VERSION_FILE = "CODE_VERSION"  # beside pyproject.toml; written by an image build (cluster/Dockerfile)
UNKNOWN_VERSION = "unknown"
RUN_DATE_FIELD = "{date}"  # in a run id: the UTC date, YYYYMMDD (run_id=nightly-{date})
LOCK_FILE = ".lock"
LEASE_SECONDS = 120.0  # an object store's run lease: older than this, its driver is taken for dead
LEASE_RENEW_SECONDS = 20.0
LEASE_SETTLE_SECONDS = 1.0
_held_locks: dict[Location, "int | RunLease"] = {}  # run folder -> the lock file or the lease this process holds


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
    """Size, mtime and SHA-256 of each input file (a path or an object-store URI), and one SHA-256
    over all of them."""
    files, overall = [], hashlib.sha256()
    for path in sorted(paths):
        location = Location.of(path)
        digest = location.sha256()
        files.append({"path": path, "size": location.size(), "mtime": location.modified(), "sha256": digest})
        overall.update(f"{path}\0{digest}\0".encode())
    return {"files": files, "sha256": overall.hexdigest()}


def lock_run_folder(root: Location, run_id: str) -> None:
    """Hold `<root>/.lock` for the rest of this process, or refuse naming the driver that holds it."""
    if root in _held_locks:
        return
    if not root.is_local:
        _held_locks[root] = RunLease(root / LOCK_FILE, run_id)
        return
    fd = os.open(root.as_path() / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(f"run {run_id} in {root.parent} is in use by another driver ({holder}); wait for it to "
                          "end or use another run_id (the lock goes when that driver exits or is killed)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, _holder().encode(), 0)
    _held_locks[root] = fd


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}"


class RunLease:
    """The lock of a run on an object store (the module docstring): taken in `__init__` or refused
    with a ConfigError naming the holder, renewed by a daemon thread, deleted by `release`."""

    def __init__(self, lock: Location, run_id: str):
        self.lock, self.token, self.holder = lock, uuid.uuid4().hex, _holder()
        current = self._read()
        if current and current["token"] != self.token and time.time() - current["renewed"] < LEASE_SECONDS:
            raise ConfigError(self._refusal(run_id, current))
        self._write()
        time.sleep(LEASE_SETTLE_SECONDS)
        current = self._read()
        if not current or current["token"] != self.token:
            raise ConfigError(self._refusal(run_id, current or {"holder": "another driver"}))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease {lock}", daemon=True)
        self._thread.start()
        atexit.register(self.release)  # a driver that ends (also by SIGTERM: rec_core.run.stopping) frees its run

    def _refusal(self, run_id: str, current: dict) -> str:
        return (f"run {run_id} in {self.lock.parent.parent} is in use by another driver ({current['holder']}); wait "
                f"for it to end or use another run_id (its lease lapses {LEASE_SECONDS:.0f} s after that driver "
                "stops renewing it)")

    def _read(self) -> dict | None:
        """The lease as stored; one that cannot be read counts as lapsed (taken over)."""
        try:
            lease = json.loads(self.lock.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            lease = None
        if not isinstance(lease, dict) or not {"token", "holder", "renewed"} <= lease.keys():
            return {"token": "", "holder": "unreadable lease", "renewed": 0.0}
        return lease

    def _write(self) -> None:
        self.lock.write_text(json.dumps({"token": self.token, "holder": self.holder, "renewed": time.time()}))

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_RENEW_SECONDS) and self.renew_once():
            pass

    def renew_once(self) -> bool:
        """Rewrite the lease with the time now; False (renewing stops) when another driver holds it."""
        try:
            current = self._read()
            if current and current["token"] != self.token:  # lapsed while this driver stalled
                log.error("run lease %s was taken over by %s: this driver no longer holds the run",
                          self.lock, current["holder"])
                return False
            self._write()
        except OSError as error:  # the store unreachable for a while: try again at the next beat
            log.warning("could not renew the run lease %s: %s", self.lock, error)
        return True

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            current = self._read()
            if current and current["token"] == self.token:
                self.lock.unlink(missing_ok=True)
        except OSError as error:  # the store unreachable: the lease lapses by itself
            log.warning("could not delete the run lease %s (%s): it lapses in %.0f s", self.lock, error, LEASE_SECONDS)


def _changed_files(recorded: dict) -> list[str]:
    """The recorded input files that are gone or whose content differs now."""
    paths = [entry["path"] for entry in recorded["files"]]
    missing = [path for path in paths if not Location.of(path).is_file()]
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
        self.root = Location.of(config["output_dir"]) / self.run_id
        try:
            self.root.mkdir()
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ConfigError(f"output_dir={config['output_dir']}: cannot write the run folder {self.root} "
                              f"({error.strerror or error}); give a writable folder") from None
        lock_run_folder(self.root, self.run_id)
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
            self.manifest = {"run_id": self.run_id, "created": utc_now(), "stages": {}, "outputs": {},
                             "code_version": code_version()}
        self.manifest.setdefault("outputs", {})
        self._running_stage: str | None = None  # the stage now running, and the files it registered
        self._stage_outputs: list[str] | None = None
        self.manifest["config"] = config
        self.save_manifest()

    def release(self) -> None:
        """Give up this process's lock on the run (a harness handing the run to another driver)."""
        held = _held_locks.pop(self.root, None)
        if isinstance(held, RunLease):
            held.release()
        elif held is not None:
            os.close(held)

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

    def table_path(self, name: str) -> Location:
        return self.root / name

    def write_table(self, name: str, frame: "pd.DataFrame | pa.Table") -> int:
        """Write `frame` (pandas or Arrow) as <run>/<name>/part-0.parquet (atomically: temp file,
        then rename) and register its checksum."""
        folder = self.table_path(name)
        folder.mkdir()
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
        write_parquet(table, folder / TABLE_FILE)
        self.register_output(f"{name}/{TABLE_FILE}")
        return len(frame)

    @contextmanager
    def table_writer(self, name: str):
        """A table too large to hold whole in memory, written in parts: yields a TableWriter whose
        `write(frame)` appends a row group to <run>/<name>/part-0.parquet. The file appears
        (atomically: temp file, then rename) and its checksum is registered when the block ends
        without an error; an error leaves no table behind."""
        folder = self.table_path(name)
        folder.mkdir()
        target = folder / TABLE_FILE
        writer = TableWriter(target.temporary_sibling())
        try:
            yield writer
            writer.close()
        except BaseException:
            writer.close()
            writer.path.unlink(missing_ok=True)
            raise
        writer.path.replace(target)
        self.register_output(f"{name}/{TABLE_FILE}")

    @contextmanager
    def sharded_table(self, name: str):
        """A table written in parts by other processes (Ray actors scoring shards of the users):
        yields its folder, emptied of an earlier attempt's parts (and their manifest entries); each
        writer puts whole part-<shard>.parquet files in it (rec_core.train.shards, written with
        rec_core.storage.location.write_parquet). When the block ends without an error the
        parts are registered (a table of no rows gets an empty part, so it reads as empty); an
        error leaves no table behind."""
        folder = self.table_path(name)
        folder.remove_tree()
        for relative in [relative for relative in self.manifest["outputs"] if relative.startswith(f"{name}/")]:
            del self.manifest["outputs"][relative]
        folder.mkdir()
        try:
            yield folder
        except BaseException:
            folder.remove_tree()
            raise
        parts = folder.glob(PART_GLOB)
        if not parts:
            write_parquet(pa.table({}), folder / TABLE_FILE)
            parts = [folder / TABLE_FILE]
        for part in parts:
            self.register_output(f"{name}/{part.name}")

    def register_output(self, relative: str) -> None:
        """Record the checksum of file <run>/<relative>, written by the stage now running."""
        path = self.root / relative
        self.manifest["outputs"][relative] = {"sha256": path.sha256(), "bytes": path.size(),
                                              "stage": self._running_stage}
        if self._stage_outputs is not None:
            self._stage_outputs.append(relative)
        self.save_manifest()

    def read_table(self, name: str, filters=None, columns: list[str] | None = None) -> pd.DataFrame:
        """Table `name`, checked against its checksums; `filters`: pyarrow's row filter, to read part
        of it; `columns`: only these (a stage that needs two of a large table's columns)."""
        return read_run_table(self.root, name, self.manifest, filters, columns)

    def has_table(self, name: str) -> bool:
        return any(self.table_path(name).glob(PART_GLOB))

    def damaged_outputs(self, relatives) -> list[str]:
        """Those of the registered files `relatives` that are gone or differ from their checksum."""
        damaged = []
        for relative in relatives:
            recorded, path = self.manifest["outputs"].get(relative), self.root / relative
            if not path.is_file():
                damaged.append(f"{relative} (missing)")
            elif recorded and (path.size() != recorded["bytes"] or path.sha256() != recorded["sha256"]):
                damaged.append(f"{relative} (checksum differs)")
        return damaged

    # ---------------------------------------------------------------- stages

    def stage_done(self, stage: str) -> bool:
        """Finished, its outputs intact and its inputs unchanged (else it must run again: said in the log)."""
        record = self.manifest["stages"].get(stage, {})
        if record.get("status") != "done":
            return False
        damaged = self.damaged_outputs(record.get("outputs", []))
        changed = [relative for relative, sha in record.get("inputs", {}).items()
                   if self.manifest["outputs"].get(relative, {}).get("sha256") != sha]
        if damaged or changed:
            log.warning("stage %s of run %s runs again: %s", stage, self.run_id,
                        "; ".join([f"its output {item}" for item in damaged]
                                  + [f"its input {item} was rewritten since" for item in changed]))
            return False
        return True

    def stage_current(self, stage: str) -> bool:
        """Done (stage_done), and for a stage downstream of training (it covers every model: evaluate,
        export, report, publish) done for the models configured now: a model added to a finished run
        is evaluated and exported, not skipped as "already done"."""
        if not self.stage_done(stage):
            return False
        return stage in UPSTREAM_STAGES or self.manifest["stages"][stage].get("models") == list(self.config["models"])

    @contextmanager
    def stage(self, name: str):
        """Records status, timing, the configuration and the configured models of a stage, the
        checksums of the earlier outputs it could read and the files it registers; yields a dict
        for row counts and notes."""
        inputs = {relative: entry["sha256"] for relative, entry in self.manifest["outputs"].items()
                  if entry.get("stage") != name and not _sibling_models(name, entry.get("stage"))}
        record = {"status": "running", "started": utc_now(), "models": list(self.config["models"]),
                  "config": copy.deepcopy(self.config), "inputs": inputs, "outputs": []}
        self.manifest["stages"][name] = record
        self._running_stage, self._stage_outputs = name, record["outputs"]
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
        finally:
            self._running_stage = self._stage_outputs = None
        record.update(status="done", finished=utc_now(), seconds=round(time.perf_counter() - began, 2), **info)
        self.save_manifest()
        log.info("stage %s done in %.1f s", name, record["seconds"])

    def save_manifest(self) -> None:
        self.manifest_path.write_text(json.dumps(self.manifest, indent=2, default=str))  # atomic


class TableWriter:
    """Appends frames of one schema (the first frame's) to a Parquet file, one row group each."""

    def __init__(self, path: Location):
        self.path, self.rows, self._writer = path, 0, None

    def write(self, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path.path, table.schema, filesystem=self.path.fs)
        self._writer.write_table(table.cast(self._writer.schema))
        self.rows += len(frame)

    def close(self) -> None:
        if self._writer is None:  # nothing written: an empty table of no columns
            pq.write_table(pa.table({}), self.path.path, filesystem=self.path.fs)
        else:
            self._writer.close()
        self._writer = None


def read_run_table(root: "str | os.PathLike | Location", name: str, manifest: dict | None = None,
                   filters=None, columns: list[str] | None = None) -> pd.DataFrame:
    """Table `name` of the run in folder `root` (also of a run this process does not own), checked
    against the checksum in its manifest (read from `root` unless given); a table that is damaged
    is a ConfigError naming it and the stage that wrote it, which runs again on the next rerun."""
    root = Location.of(root)
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(f"table '{name}' not found in run {root}; run the stage that writes it")
    if manifest is None:
        manifest = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").is_file() else {}
    parts = {relative: entry for relative, entry in manifest.get("outputs", {}).items()
             if relative.startswith(f"{name}/")}
    writer = next((entry.get("stage") for entry in parts.values() if entry.get("stage")), None) or next(
        (stage for stage, record in manifest.get("stages", {}).items() if name in record.get("rows", {})), None)
    missing = [relative for relative in parts if not (root / relative).is_file()]
    altered = [relative for relative, entry in parts.items()
               if relative not in missing and (root / relative).sha256() != entry["sha256"]]
    if missing:
        damage = f"its part {missing[0]} is missing"
    elif altered:
        damage = f"its checksum differs from the manifest's: {altered[0]}"
    else:
        try:  # the registered parts in name order (a sharded table's shard order), else the folder
            source = [root / relative for relative in sorted(parts)] if parts else folder
            return read_parquet(source, filters=filters, columns=columns).to_pandas()
        except (pa.ArrowException, OSError) as error:
            damage = str(error)
    stage = f"stage {writer}" if writer else "the stage that writes it"
    raise ConfigError(f"table '{name}' of run {root} is damaged ({damage}): {stage} must run again (rerun the "
                      "same run_id: it redoes that stage and what depends on it)") from None


def _sibling_models(stage: str, writer: str | None) -> bool:
    """Two plain training stages: one model's weights are not an input of another's training (a
    retrained model must not force every other model to retrain); a distilled student's stage does
    read its teacher and student, so it keeps them as inputs."""
    return (stage.startswith("train:") and not stage.endswith("+distill") and writer is not None
            and writer.startswith("train:"))


def text_cache_folder(config: dict) -> Location:
    """The text-embedding cache (rec_core.text.encoder): `text_cache_dir`, or the one shared by the
    stages and runs of an output_dir."""
    if config["text_cache_dir"]:
        return Location.of(config["text_cache_dir"])
    return Location.of(config["output_dir"]) / "text_embedding_cache"


def fork_upstream(source: "str | os.PathLike | Location", config: dict) -> Run:
    """A new run for `config` starting with the finished stages before training of the run in
    `source` (their tables copied, their manifest records kept, `forked_from` noted), so that a sweep
    of training settings computes the UPSTREAM_STAGES' tables (ingest, semantic, crowd, describe)
    once. Refused unless the two configs agree on every pinned section outside TRAINING_SECTIONS
    (the sections those stages read), and unless the new run id is unused."""
    source = Location.of(source)
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
                (source / table).copy_tree(run.table_path(table))
        run.manifest["stages"][stage] = {**record, "forked_from": str(source)}
        run.manifest["outputs"].update({relative: entry for relative, entry in old.get("outputs", {}).items()
                                        if entry.get("stage") == stage})
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
