"""Stage: export, the serving contract of every configured model.

What downstream systems read (through `<output_dir>/latest/` once the run is published): for
**every** user of the data (not only the evaluated ones), from the user's **full** history (every
interaction the run ingested, in time order; for session data, every item of the session), with
the data's own (source) user and item ids, so the tables join with the catalogue whatever dense ids
a run assigned. Each row carries the model name and `schema_version` (SCHEMA_VERSION).

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
"""

from __future__ import annotations

import logging
from contextlib import ExitStack

import numpy as np
import pandas as pd

from rec_core.data.splits import sequences_for
from rec_core.eval.evaluator import top_k
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run
from rec_core.train.ray_train import load_protocol
from rec_core.train.scoring import Scorer

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # bump on any change of the tables above (columns, types or meaning)


def export(run: Run) -> None:
    """Streams: `export.chunk_users` users at a time are scored and appended to each table (one
    Parquet row group per chunk), so the driver holds one chunk's lists and vectors, never every
    user's (at 1M users and top 50, one model's recommendations alone are 50M rows)."""
    with run.stage("export") as info, ExitStack() as tables:
        data = load_protocol(run.root, run.config["split"]["history_fraction"])
        users, items = run.read_table("users"), run.read_table("items")
        user_source = users.set_index("user_id")["source_id"].astype(str)
        item_source = items.sort_values("item_id")["source_id"].astype(str).to_numpy()
        interactions = run.read_table("interactions")  # sorted by user, then time (ingest)
        all_histories = sequences_for(interactions, users["user_id"].to_numpy())
        all_sources = user_source.loc[all_histories.user_ids].to_numpy()
        top, batch = run.config["eval"]["top_k"], run.config["train"]["eval_batch_size"]
        chunk = run.config["export"]["chunk_users"]
        writers = {}

        def write(table: str, frame: pd.DataFrame) -> None:
            if table not in writers:
                writers[table] = tables.enter_context(run.table_writer(table))
            writers[table].write(frame)

        unservable = {}
        for name in run.config["models"]:
            scorer = Scorer(name, data, run.root / "models" / name)
            servable = scorer.servable(all_histories.user_ids)
            histories, sources = all_histories, all_sources
            if not servable.all():  # counted, not silently dropped
                unservable[name] = int((~servable).sum())
                histories = sequences_for(interactions, all_histories.user_ids[servable])
                sources = all_sources[servable]
            vectors = scorer.item_vectors()
            if vectors is not None:
                write("item_embeddings", pd.DataFrame({"schema_version": SCHEMA_VERSION, "model": name,
                                                       "item_source_id": item_source[:len(vectors)],
                                                       "embedding": list(vectors.astype(np.float32))}))
            for start in range(0, len(histories), chunk):
                part, part_sources = histories.slice(start, min(start + chunk, len(histories))), sources[start:start + chunk]
                ranked = top_k(scorer, part, data.num_items, top, batch).rows()
                write("recommendations", pd.DataFrame({
                    "schema_version": SCHEMA_VERSION, "model": name, "user_source_id": np.repeat(part_sources, top),
                    "rank": ranked["rank"], "item_source_id": item_source[ranked["item_id"].to_numpy()],
                    "score": ranked["score"].to_numpy(np.float32)}))
                if vectors is None:
                    continue
                user_vectors = scorer.interests(part, batch)  # [U, K, d]
                n_users, k, _ = user_vectors.shape
                write("user_interests", pd.DataFrame({
                    "schema_version": SCHEMA_VERSION, "model": name, "user_source_id": np.repeat(part_sources, k),
                    "interest": np.tile(np.arange(k), n_users),
                    "vector": list(user_vectors.reshape(n_users * k, -1).astype(np.float32))}))
            log.info("export: %s, %d users", name, len(histories))
        info["rows"] = {table: writer.rows for table, writer in writers.items()}
        info["users"] = len(all_sources)
        info["users_without_a_model_embedding"] = unservable  # graph models: users too short to split
        info["schema_version"] = SCHEMA_VERSION


def main(argv=None) -> None:
    main_guard(lambda config: export(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
