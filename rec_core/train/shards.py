"""Scoring every user in shards, on Ray actors: the evaluation's and the export's engine.

Why on Ray: the evaluation ranks every valid and test user against the whole catalogue and the
export every user, so both grow with users x items; in one driver they also held every user's
histories, lists and vectors (1.5 and 1.8 GiB driver RSS at 100k synthetic users, growing with
the users). Here the driver holds the user ids and hands out shards of them. A `ShardScorer` loads
every model of the run once (one per Ray actor); per shard it reads only the shard's rows of the
interactions (a filter on the shard's id range, which the Parquet row groups' statistics narrow),
ranks its users and writes its own part of each table (`write_part`, into the folder of a
rec_core.run.directory.Run.sharded_table).
What travels back to the driver is row counts.

Below `scoring.distributed_min_users` users the same ShardScorer runs in the driver, shard after
shard: starting actors (each imports torch and loads the models: seconds) would cost more than it
saves on, say, ML-100K's 94 test users.

Shards of evaluation users are multiples of `train.eval_batch_size` users of one split, in id
order, so every batch holds the users that a single-process evaluation's batch held: the figures
are those of one process to the last digit, and a table's parts read in name order give the rows
in shard order.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rec_core.data.splits import EvalSet, cut_history, sequences_for
from rec_core.eval.evaluator import top_k, user_metrics
from rec_core.session.protocol import evaluation_sessions
from rec_core.storage.location import Location, parquet_dataset, read_parquet, write_parquet
from rec_core.train.ray_train import is_session_run
from rec_core.train.scoring import Scorer

log = logging.getLogger(__name__)

USER_METRIC_COLUMNS = ["model", "split", "user_id", "metric", "k", "value"]
LIST_COLUMNS = ["model", "user_id", "rank", "item_id", "score"]
SCHEMA_VERSION = 1  # of the export's tables (jobs.export): bump on any change of their columns, types or meaning
PROGRESS_SECONDS = 30.0


def write_part(folder: str | Location, part: str, frame: pd.DataFrame) -> int:
    """<folder>/part-<part>.parquet of a sharded table (rec_core.run.directory.Run.sharded_table),
    written by the process that computed it; returns its rows."""
    write_parquet(pa.Table.from_pandas(frame, preserve_index=False), Location.of(folder) / f"part-{part}.parquet")
    return len(frame)


def _keyed(run_root: Location) -> tuple[str, str, str]:
    """(rows table, splits table, id column): sessions for session data, else the users' interactions."""
    if is_session_run(run_root):
        return "sessions", "session_splits", "session_id"
    return "interactions", "user_splits", "user_id"


def read_rows(folder: Location, key: str, ids: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
    """The rows of the table in `folder` whose `key` is one of `ids` (sorted), in the table's order.
    The range filter lets Parquet skip the row groups outside [ids[0], ids[-1]]."""
    if not len(ids):
        empty = parquet_dataset(folder).schema.empty_table()
        return (empty.select(columns) if columns else empty).to_pandas()
    table = read_parquet(folder, columns=columns, filters=[(key, ">=", int(ids[0])), (key, "<=", int(ids[-1]))])
    return table.filter(pc.is_in(table[key], value_set=pa.array(ids, type=table.schema.field(key).type))).to_pandas()


def split_ids(run_root: str | Location) -> dict[str, np.ndarray]:
    """split name -> its user (or session) ids, ascending."""
    run_root = Location.of(run_root)
    _, splits, key = _keyed(run_root)
    table = read_parquet(run_root / splits, columns=[key, "split"])
    ids, names = table[key].to_numpy(), table["split"].to_numpy(zero_copy_only=False)
    return {name: np.sort(ids[names == name]).astype(np.int64) for name in ("train", "valid", "test")}


def train_item_counts(run_root: str | Location, num_items: int) -> np.ndarray:
    """Every item's count of training interactions (popularity's scores), streamed over the rows
    table a record batch at a time: the driver never holds the table."""
    run_root = Location.of(run_root)
    rows, _, key = _keyed(run_root)
    train = split_ids(run_root)["train"]
    counts = np.zeros(num_items, np.int64)
    for batch in parquet_dataset(run_root / rows).to_batches(columns=[key, "item_id"]):
        owners = batch.column(key).to_numpy()
        place = np.minimum(np.searchsorted(train, owners), max(len(train) - 1, 0))
        is_train = train[place] == owners if len(train) else np.zeros(len(owners), bool)
        counts += np.bincount(batch.column("item_id").to_numpy()[is_train], minlength=num_items)
    return counts


class ShardScorer:
    """Every model of a run, loaded once, scoring shards of users (one per Ray actor, or the driver's
    own). `evaluate` and `export` write their parts of the tables and return row counts."""

    def __init__(self, run_root: str, models: list[str], num_items: int, popularity_counts: np.ndarray | None,
                 history_fraction: float, batch_size: int):
        self.root = Location.of(run_root)
        self.num_items, self.history_fraction, self.batch_size = num_items, history_fraction, batch_size
        self.rows_table, self.splits_table, self.key = _keyed(self.root)
        self.scorers = {name: Scorer(name, num_items, self.root / "models" / name, popularity_counts)
                        for name in models}
        self._item_sources = None

    def eval_set(self, split: str, ids: np.ndarray) -> EvalSet:
        """The split's history and targets of users `ids`: the protocol's (build_protocol /
        session_protocol) restricted to them."""
        if self.key == "session_id":
            return evaluation_sessions(read_rows(self.root / self.splits_table, self.key, ids), split)
        rows = read_rows(self.root / self.rows_table, self.key, ids)
        return cut_history(sequences_for(rows, ids), self.history_fraction)

    def evaluate(self, split: str, part: str, ids: np.ndarray, ks: list[int], list_depth: int,
                 folders: dict[str, str]) -> dict[str, int]:
        """Per-user metrics of users `ids` of `split` for every model (-> user_metrics), and for the
        test split each model's top `list_depth` (-> test_recommendations)."""
        data = self.eval_set(split, ids)
        per_user, lists = [], []
        for name, scorer in self.scorers.items():
            if split == "test":
                ranking = top_k(scorer, data.histories, self.num_items, list_depth, self.batch_size)
                lists.append(ranking.rows().assign(model=name)[LIST_COLUMNS])
            figures = user_metrics(scorer, data, self.num_items, ks=ks, batch_size=self.batch_size)
            per_user.append(figures.assign(model=name, split=split)[USER_METRIC_COLUMNS])
        written = {"user_metrics": write_part(folders["user_metrics"], part, pd.concat(per_user, ignore_index=True))}
        if lists:
            written["test_recommendations"] = write_part(folders["test_recommendations"], part,
                                                         pd.concat(lists, ignore_index=True))
        return written

    def item_sources(self) -> np.ndarray:
        if self._item_sources is None:
            items = read_parquet(self.root / "items", columns=["item_id", "source_id"]).to_pandas()
            self._item_sources = items.sort_values("item_id")["source_id"].astype(str).to_numpy()
        return self._item_sources

    def export(self, part: str, ids: np.ndarray, depth: int, folders: dict[str, str]) -> dict:
        """The serving rows of users `ids` (every one of their interactions, in time order) for every
        model: top `depth` (-> recommendations) and interest vectors (-> user_interests), with source
        ids; the users a model cannot serve are counted (`unservable`)."""
        users = read_rows(self.root / "users", "user_id", ids, columns=["user_id", "source_id"])
        user_source = users.set_index("user_id")["source_id"].astype(str)
        interactions = read_rows(self.root / "interactions", "user_id", ids)  # by user, then time (ingest)
        histories = sequences_for(interactions, ids)
        item_source = self.item_sources()
        recommendations, interests, unservable = [], [], {}
        for name, scorer in self.scorers.items():
            servable = scorer.servable(histories.user_ids)
            served = histories
            if not servable.all():  # counted, not silently dropped
                unservable[name] = int((~servable).sum())
                served = sequences_for(interactions, histories.user_ids[servable])
            sources = user_source.loc[served.user_ids].to_numpy()
            ranked = top_k(scorer, served, self.num_items, depth, self.batch_size).rows()
            recommendations.append(pd.DataFrame({
                "schema_version": SCHEMA_VERSION, "model": name, "user_source_id": np.repeat(sources, depth),
                "rank": ranked["rank"], "item_source_id": item_source[ranked["item_id"].to_numpy()],
                "score": ranked["score"].to_numpy(np.float32)}))
            vectors = scorer.interests(served, self.batch_size)  # [U, K, d]; None: no vectors (popularity)
            if vectors is None:
                continue
            n_users, k, _ = vectors.shape
            interests.append(pd.DataFrame({
                "schema_version": SCHEMA_VERSION, "model": name, "user_source_id": np.repeat(sources, k),
                "interest": np.tile(np.arange(k), n_users),
                "vector": list(vectors.reshape(n_users * k, -1).astype(np.float32))}))
        rows = {"recommendations": write_part(folders["recommendations"], part, pd.concat(recommendations))}
        if interests:
            rows["user_interests"] = write_part(folders["user_interests"], part, pd.concat(interests))
        return {"rows": rows, "users": len(histories), "unservable": unservable}

    def item_embeddings(self, folder: str) -> int:
        """Every neural model's item vectors with source ids (-> item_embeddings); returns its rows."""
        frames = []
        for name, scorer in self.scorers.items():
            vectors = scorer.item_vectors()
            if vectors is not None:
                frames.append(pd.DataFrame({"schema_version": SCHEMA_VERSION, "model": name,
                                            "item_source_id": self.item_sources()[:len(vectors)],
                                            "embedding": list(vectors.astype(np.float32))}))
        return write_part(folder, "00000", pd.concat(frames)) if frames else 0


def shards(ids: np.ndarray, size: int) -> list[np.ndarray]:
    """`ids` cut into consecutive slices of `size`."""
    return [ids[start:start + size] for start in range(0, len(ids), size)]


def run_shards(scorer_args: dict, tasks: list[tuple[str, tuple]], workers: int, distributed: bool,
               what: str) -> list:
    """ShardScorer(**scorer_args).<method>(*args) for every (method, args) of `tasks`, in task order:
    on `workers` Ray actors (1 CPU each, at most the cluster's CPUs) when `distributed` (Ray
    started by the job), else in this process. Logs progress every PROGRESS_SECONDS; a failing shard fails the whole call."""
    began, last_note, results = time.perf_counter(), time.perf_counter(), []

    def progress(done: int) -> None:
        nonlocal last_note
        if time.perf_counter() - last_note >= PROGRESS_SECONDS or done == len(tasks):
            log.info("%s: %d/%d shards, %.0f s", what, done, len(tasks), time.perf_counter() - began)
            last_note = time.perf_counter()

    if not distributed:
        scorer = ShardScorer(**scorer_args)
        for method, args in tasks:
            results.append(getattr(scorer, method)(*args))
            progress(len(results))
        return results
    import ray
    from ray.util import ActorPool

    if not ray.is_initialized():
        raise RuntimeError("run_shards(distributed=True) needs Ray started by its job (jobs.train.init_ray)")
    workers = max(1, min(workers, len(tasks), int(ray.cluster_resources().get("CPU", 1))))
    shared = {key: ray.put(value) if isinstance(value, np.ndarray) else value for key, value in scorer_args.items()}
    actors = [ray.remote(num_cpus=1)(ShardScorer).remote(**shared) for _ in range(workers)]
    log.info("%s: %d shards on %d Ray actors", what, len(tasks), workers)
    try:
        for result in ActorPool(actors).map(lambda actor, task: getattr(actor, task[0]).remote(*task[1]), tasks):
            results.append(result)
            progress(len(results))
    finally:
        for actor in actors:
            ray.kill(actor)
    return results
