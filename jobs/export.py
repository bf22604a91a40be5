"""Stage: export, the serving contract of every configured model.

What downstream systems read (through `<output_dir>/latest/` once the run is published): for
**every** user of the data (not only the evaluated ones), from the user's **full** history (every
interaction the run ingested, in time order; for session data, every item of the session), with
the data's own (source) user and item ids, so the tables join with the catalogue whatever dense ids
a run assigned. Each row carries the model name and `schema_version` (SCHEMA_VERSION). A table is
one Parquet file per shard of `scoring.shard_users` users (`part-<shard>.parquet`, read the folder).

recommendations  schema_version, model, user_source_id, rank, item_source_id, score
                 top `eval.top_k` per user, the user's own items excluded, rank 1 = best,
                 equal scores ranked by the lower item (the evaluator's order)
item_embeddings  schema_version, model, item_source_id, embedding (float32 list)
                 the vectors a user's interest vectors are scored against (dot product); neural
                 models only
user_interests   schema_version, model, user_source_id, interest, vector (float32 list)
                 one row per user and interest vector (K of a multi-interest model, 1 otherwise),
                 computed from the full history: an ANN index over item_embeddings serves them,
                 a user's score of an item being the best of its interests' dot products

LightGCN's user vectors are the trained graph's (a valid/test user through its history part):
the newest items reach them at the next training; a user without one (too short to split) is
left out of that model's rows and counted in the manifest. The evaluation's own lists (test users, from
the history part, dense ids) are `test_recommendations`, written by the evaluate stage.

The users are scored in shards by rec_core.train.shards: on Ray actors, each with every model loaded
once, from `scoring.distributed_min_users` users on; each actor writes its shards' parts itself, so
the driver holds user ids only (at 1M users and top 50, one model's recommendations are 50M rows).
"""

from __future__ import annotations

import logging

import numpy as np

from jobs.evaluate import score_shards, scorer_settings
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run
from rec_core.storage.location import read_parquet
from rec_core.train.shards import SCHEMA_VERSION, shards

log = logging.getLogger(__name__)


def export(run: Run) -> None:
    with run.stage("export") as info:
        settings, scoring = scorer_settings(run), run.config["scoring"]
        ids = read_parquet(run.table_path("users"), columns=["user_id"])["user_id"].to_numpy()
        ids = np.sort(ids).astype(np.int64)
        with run.sharded_table("recommendations") as lists, run.sharded_table("user_interests") as vectors, \
                run.sharded_table("item_embeddings") as items:
            folders = {"recommendations": str(lists), "user_interests": str(vectors)}
            tasks = [("item_embeddings", (str(items),))] + [
                ("export", (f"{index:05d}", part, run.config["eval"]["top_k"], folders))
                for index, part in enumerate(shards(ids, scoring["shard_users"]))]
            results = score_shards(run, settings, tasks, len(ids), "export")
        parts = results[1:]
        rows = {"item_embeddings": results[0]}
        for table in ("recommendations", "user_interests"):
            rows[table] = sum(part["rows"].get(table, 0) for part in parts)
        unservable = {}
        for part in parts:
            for name, count in part["unservable"].items():
                unservable[name] = unservable.get(name, 0) + count
        for name in run.config["models"]:
            log.info("export: %s, %d users", name, sum(part["users"] for part in parts) - unservable.get(name, 0))
        info["rows"] = {table: count for table, count in rows.items() if count}
        info["users"] = sum(part["users"] for part in parts)
        info["users_without_a_model_embedding"] = unservable  # graph models: users too short to split
        info["schema_version"] = SCHEMA_VERSION


def main(argv=None) -> None:
    main_guard(lambda config: export(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
