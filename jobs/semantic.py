"""Stage: user-individual semantic interests -> table `user_semantic_clusters`.

Each selected training user's most recent `semantic.max_items` items (title and genres /
categories) are split into 1..`semantic.max_clusters` named interest clusters by one of two
backends (`semantic.backend`):

- `encoder`: item-text embeddings clustered per user (rec_core.interests.grouping), the default:
  on this machine it groups by meaning where the small offline LLM does not (see the coherence
  figures in the manifest and the README);
- `llm`: the LLM stage (rec_core.llm.stage: Ray Data + vLLM, cached, structured JSON output),
  every answer validated and repaired (rec_core.llm.cluster_output). Items an answer leaves out go
  to an "other" cluster (no collaborative embedding exists yet at this stage).

Which users: all training users when `semantic.max_users` is 0, else the `max_users` training
users with the lowest sha256("<semantic.selection_seed>:<user id>"), a seeded sample that does not
depend on the split: a user picked once is picked again in every run where it is a training
user, so reruns with other split seeds or a nightly refresh hit the LLM cache (the LLM cost is
this knob). Only training users are grouped: the clusters feed a training loss (alignment), never
serving.

Table columns: user_id, cluster, name, item_ids, status (ok / repaired / failed), backend,
cache_key (llm backend), detail (repairs applied, or why it failed; failed users get one row with
cluster -1), input_key (rec_core.run.incremental.history_keys of the grouped items: an incremental
night keeps the clusters of every history whose key is unchanged and groups only the others). The manifest records counts, LLM token counts and timings, and the coherence of the
grouping against random partitions of the same sizes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rec_core.data.splits import Histories, recent_items
from rec_core.interests.coherence import coherence
from rec_core.llm.cluster_output import CLUSTER_SCHEMA, FAILED, OK, ClusterResult, validate_clusters
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run, text_cache_folder
from rec_core.run.incremental import history_keys, previous_root, reusable_groupings

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You analyse what a user is interested in. You get the items the user engaged with, numbered. "
    "Group the items into between 1 and {max_clusters} interests: each interest is one coherent theme "
    "(genre, category, style or purpose), each item number appears in exactly one interest, and each "
    "interest gets a short name. Answer with JSON only, in the form "
    '{{"clusters": [{{"name": "<interest>", "items": [<item numbers>]}}]}}.'
)


ROW_COLUMNS = ["user_id", "cluster", "name", "item_ids", "status", "backend", "cache_key", "detail"]


def select_users(user_splits: pd.DataFrame, max_users: int, selection_seed: int) -> np.ndarray:
    users = np.sort(user_splits.loc[user_splits["split"] == "train", "user_id"].to_numpy())
    if max_users and max_users < len(users):
        rank = [hashlib.sha256(f"{selection_seed}:{int(user)}".encode()).hexdigest() for user in users]
        users = np.sort(users[np.argsort(rank, kind="stable")[:max_users]])
    return users


def user_prompt(item_texts: list[str]) -> str:
    lines = "\n".join(f"{number}. {text}" for number, text in enumerate(item_texts, start=1))
    return f"Items:\n{lines}"


def row_schema(n_items: int, max_clusters: int) -> str:
    schema = json.loads(json.dumps(CLUSTER_SCHEMA))
    schema["properties"]["clusters"]["maxItems"] = max_clusters
    items = schema["properties"]["clusters"]["items"]["properties"]["items"]
    items["maxItems"] = n_items  # bounds the answer: small models otherwise repeat a number until max_tokens
    items["items"].update(minimum=1, maximum=n_items)
    return json.dumps(schema)


def encoder_rows(grouping, histories) -> list[dict]:
    """The table rows of (history id, item ids) pairs grouped by a fitted EncoderGrouping."""
    rows = []
    for user, item_ids in histories:
        names, clusters = grouping.group(item_ids)
        rows += [{"user_id": int(user), "cluster": j, "name": name, "item_ids": members, "status": OK,
                  "backend": "encoder", "cache_key": "", "detail": ""}
                 for j, (name, members) in enumerate(zip(names, clusters))]
    return rows


class EncoderGroupingActor:
    """A Ray Data actor of the distributed encoder grouping: the fitted grouping (item vectors,
    labels, titles: catalogue-sized, not user-sized) arrives once, when the actor is built."""

    def __init__(self, grouping):
        self.grouping = grouping

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(encoder_rows(self.grouping, zip(batch["user_id"], batch["item_ids"])),
                            columns=ROW_COLUMNS)


def group_with_encoder(items: pd.DataFrame, histories: Histories, config: dict):
    """The catalogue's texts are embedded once in this process (through the shared embedding cache:
    their number grows with the catalogue, not the users). The per-history clustering is user-sized
    work: from `semantic.distributed_min_histories` histories on it runs on Ray Data, batches of
    histories over `semantic.grouping_workers` actors that each receive the fitted grouping once;
    below that, Ray's start-up and transfers would cost more than the work, so it runs here. Both
    write the same rows (the same function groups them)."""
    from rec_core.interests.grouping import EncoderGrouping

    semantic = config["semantic"]
    grouping = EncoderGrouping(semantic["encoder_model"], semantic["max_clusters"], semantic["merge_threshold"],
                               text_cache_folder(config)).fit(items)
    extra = {"encoder_model": grouping.model_id_}
    if len(histories) < semantic["distributed_min_histories"]:
        return pd.DataFrame(encoder_rows(grouping, histories.items()), columns=ROW_COLUMNS), extra
    return group_on_ray(grouping, histories, semantic["grouping_workers"], config["ray"]), \
        {**extra, "distributed": True}


def group_on_ray(grouping, histories: Histories, workers: int, ray_settings: dict,
                 batch_size: int = 4096) -> pa.Table:
    import ray

    from jobs.ray_runtime import init_ray

    init_ray(ray_settings)
    ids = histories.sequences.user_ids
    blocks = [pa.table({"user_id": ids[start:start + batch_size],  # from the arrays: no Python lists
                        "item_ids": histories.list_array(start, start + batch_size)})
              for start in range(0, len(histories), batch_size)]
    grouped = ray.data.from_arrow(blocks).map_batches(
        EncoderGroupingActor, fn_constructor_kwargs={"grouping": grouping}, batch_size=batch_size,
        batch_format="pandas", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers), num_cpus=1)
    # the actors' Arrow blocks as they are (Python lists of 2M clusters would cost the driver ~1 GiB),
    # in user order: each block holds a run of consecutive users, the blocks may come in any order
    blocks = [block for block in ray.get(grouped.to_arrow_refs()) if block.num_rows]
    blocks.sort(key=lambda block: block["user_id"][0].as_py())
    return pa.concat_tables(blocks, promote_options="permissive")


def cluster_requests(items: pd.DataFrame, histories: Mapping[int, list[int]], max_clusters: int) -> pd.DataFrame:
    """One LLM request per user (request_id = user id): shared instruction, numbered items, schema."""
    texts = items["text"].tolist()
    users = list(histories)
    return pd.DataFrame({
        "request_id": users,
        "system": SYSTEM_PROMPT.format(max_clusters=max_clusters),
        "user": [user_prompt([texts[i] for i in histories[u]]) for u in users],
        "schema": [row_schema(len(histories[u]), max_clusters) for u in users],
    })


def group_with_llm(items: pd.DataFrame, histories: Mapping[int, list[int]], config: dict):
    from rec_core.llm.stage import cache_folder, run_prompts
    from rec_core.llm.prompt_cache import PromptCache

    semantic = config["semantic"]
    requests = cluster_requests(items, histories, semantic["max_clusters"])
    answers, stats = run_prompts(requests, config["llm"], PromptCache(cache_folder(config)),
                                 cache_flush_rows=config["llm"]["cache_flush_rows"], ray_settings=config["ray"])
    rows = []
    for answer in answers.itertuples():
        item_ids = histories[int(answer.request_id)]
        if answer.error:
            result = ClusterResult(FAILED, reason=f"request error: {answer.error}")
        else:
            result = validate_clusters(answer.output, item_ids, semantic["max_clusters"])
        if result.status == FAILED:
            rows.append({"user_id": int(answer.request_id), "cluster": -1, "name": "", "item_ids": [],
                         "status": FAILED, "backend": "llm", "cache_key": answer.key, "detail": result.reason})
            continue
        rows += [{"user_id": int(answer.request_id), "cluster": j, "name": name, "item_ids": members,
                  "status": result.status, "backend": "llm", "cache_key": answer.key,
                  "detail": "; ".join(dict.fromkeys(result.repairs))}
                 for j, (name, members) in enumerate(zip(result.names, result.clusters))]
    return rows, {"llm": stats.as_dict()}


def clusters_table(reused: pd.DataFrame, rows, id_column: str, keys: dict[int, str]) -> pa.Table:
    """The table a grouping stage writes: the rows kept from the previous run and the new ones (a
    list of row dicts, a frame, or the Arrow table of the distributed grouping), sorted by id and
    cluster (stable; a table already in that order, as the distributed grouping's usually is, is not
    copied), with each history's input_key. Built in Arrow: at 1M users the distributed grouping's
    2M clusters never become Python lists in the driver."""
    text = pa.large_string()  # as pandas' str columns were written before this was built in Arrow
    schema = pa.schema([(id_column, pa.int64()), ("cluster", pa.int64()), ("name", text),
                        ("item_ids", pa.list_(pa.int64())), ("status", text), ("backend", text),
                        ("cache_key", text), ("detail", text)])

    def arrow(frame) -> pa.Table:  # rows name their id user_id (ROW_COLUMNS); kept rows name it id_column
        if not len(frame):
            return schema.empty_table()
        if not isinstance(frame, pa.Table):
            frame = pd.DataFrame(frame).rename(columns={"user_id": id_column}).reindex(columns=schema.names)
            frame = pa.Table.from_pandas(frame, preserve_index=False)
        frame = frame.rename_columns([id_column if name == "user_id" else name for name in frame.column_names])
        return frame.select(schema.names).cast(schema)

    table = pa.concat_tables([arrow(reused), arrow(rows)])
    ids, clusters = table[id_column].to_numpy(), table["cluster"].to_numpy()
    if not np.all((ids[1:] > ids[:-1]) | ((ids[1:] == ids[:-1]) & (clusters[1:] >= clusters[:-1]))):
        table = table.sort_by([(id_column, "ascending"), ("cluster", "ascending")])  # Arrow's sort is stable
    known = np.fromiter(keys, np.int64, len(keys))
    position = pc.index_in(table[id_column], value_set=pa.array(known))
    return table.append_column("input_key", pc.take(pa.array(list(keys.values()), text), position))


class Groupings(Sequence):
    """Each id's clusters (lists of item ids), from the id and item_ids columns (Arrow) of a clusters
    table sorted by id and cluster; a grouping's lists are built when it is read. The coherence reads
    a sample of `semantic.coherence_users` groupings: lists for every cluster (2M at 1M users) would
    cost the driver hundreds of MiB for nothing."""

    def __init__(self, ids: np.ndarray, item_ids: pa.ChunkedArray):
        self.item_ids = item_ids
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, np.int64)
        self.bounds = np.stack([starts, np.r_[starts[1:], len(ids)][:len(starts)]], axis=1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.bounds)

    def __getitem__(self, index: int) -> list[list[int]]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        start, end = self.bounds[index]
        return self.item_ids.slice(start, end - start).to_pylist()


def group_histories(run: Run, stage: str, table_name: str, histories: Mapping[int, list[int]], backend: str,
                    id_column: str = "user_id") -> pa.Table:
    """Group each history (id -> item ids) with `backend` into table `table_name`, inside run stage
    `stage` (shared by this stage and jobs.crowd_semantic); returns the table written."""
    config = run.config
    histories = Histories.of(histories)
    if backend not in ("encoder", "llm"):
        raise ValueError(f"semantic.backend must be 'encoder' or 'llm', got {backend!r}")
    with run.stage(stage) as info:
        items = run.read_table("items")
        keys = history_keys(items, histories)
        previous = previous_root(run)
        reused = reusable_groupings(previous, table_name, id_column, keys, items) if previous else pd.DataFrame()
        if len(reused):  # a failed grouping is tried again
            reused = reused[~reused.groupby(id_column)["status"].transform(lambda s: (s == FAILED).any())]
        taken = set(reused[id_column].tolist()) if len(reused) else set()
        pending = histories.without(taken)
        log.info("%s: grouping %d histories with the %s backend (%d kept from the previous run)", stage,
                 len(pending), backend, len(taken))
        rows, extra = [], {}
        if pending:
            rows, extra = (group_with_encoder if backend == "encoder" else group_with_llm)(items, pending, config)
        table = clusters_table(reused, rows, id_column, keys)
        del rows, reused  # the table holds what it needs of them (the distributed grouping's blocks)
        info["histories"] = {"grouped": len(pending), "kept_from_previous_run": len(taken)}
        info["rows"] = {table_name: run.write_table(table_name, table)}
        ids = table[id_column].to_numpy()
        first_rows = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)  # sorted by id
        failed = pc.equal(table["status"], FAILED)
        grouped = table.filter(pc.invert(failed)) if pc.any(failed).as_py() else table  # a filter copies
        grouped_ids = grouped[id_column].to_numpy()
        info.update(extra)
        per_user = pc.value_counts(table["status"].filter(pa.array(first_rows)))  # in order of first appearance
        info["users"] = {str(count["values"]): int(count["counts"]) for count in per_user.to_pylist()}
        groupings = Groupings(grouped_ids, grouped["item_ids"])  # sorted by id and cluster: one per id
        info["clusters_per_user"] = round(len(grouped_ids) / len(groupings), 3) if len(groupings) else 0.0
        labels = {int(i): frozenset(l) for i, l in zip(items["item_id"], items["labels"])}
        info["coherence"] = coherence(groupings, labels, seed=config["seed"],
                                      max_users=config["semantic"]["coherence_users"])
        log.info("%s: %s %s, %.2f clusters each, coherence %.3f vs random %.3f", stage, id_column, info["users"],
                 info["clusters_per_user"], info["coherence"]["coherence"], info["coherence"]["random_baseline"])
    return table


def semantic(run: Run) -> pa.Table:
    semantic_config = run.config["semantic"]
    users = select_users(run.read_table("user_splits"), semantic_config["max_users"],
                         semantic_config["selection_seed"])
    interactions = run.read_table("interactions", columns=["user_id", "item_id"])  # not the timestamps
    histories = recent_items(interactions, users, semantic_config["max_items"])
    del interactions
    return group_histories(run, "semantic", "user_semantic_clusters", histories, semantic_config["backend"])


def main(argv=None) -> None:
    main_guard(lambda config: semantic(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
