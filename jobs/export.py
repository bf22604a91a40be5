"""Stage 4, export: the serving tables of every configured model.

recommendations  model, user_id, rank, item_id, score    top-K per test user (history excluded)
item_embeddings  model, item_id, embedding               neural models only
user_interests   model, user_id, interest, vector        every split user: train users from their
                                                         whole sequence, valid/test from history
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from rec_core.eval.evaluator import evaluate
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run
from rec_core.train.ray_train import load_protocol
from rec_core.train.scoring import Scorer

log = logging.getLogger(__name__)


def export(run: Run) -> None:
    with run.stage("export") as info:
        data = load_protocol(run.root, run.config["split"]["history_fraction"])
        top_k = run.config["eval"]["top_k"]
        recommendations, embeddings, interests = [], [], []
        for name in run.config["models"]:
            scorer = Scorer(name, data, run.root / "models" / name)
            _, ranking = evaluate(scorer, data.test, data.num_items, ks=[top_k], keep_top=top_k,
                                  batch_size=run.config["train"]["eval_batch_size"])
            users = len(ranking.user_ids)
            recommendations.append(pd.DataFrame({
                "model": name, "user_id": np.repeat(ranking.user_ids, top_k),
                "rank": np.tile(np.arange(1, top_k + 1), users),
                "item_id": ranking.item_ids.reshape(-1), "score": ranking.scores.reshape(-1)}))
            vectors = scorer.item_vectors()
            if vectors is None:
                continue
            embeddings.append(pd.DataFrame({"model": name, "item_id": np.arange(len(vectors)),
                                            "embedding": list(vectors.astype(np.float32))}))
            for sequences in (data.train, data.valid.histories, data.test.histories):
                user_vectors = scorer.interests(sequences)  # [U, K, d]
                n_users, k, _ = user_vectors.shape
                interests.append(pd.DataFrame({
                    "model": name, "user_id": np.repeat(sequences.user_ids, k),
                    "interest": np.tile(np.arange(k), n_users),
                    "vector": list(user_vectors.reshape(n_users * k, -1).astype(np.float32))}))
        rows = {"recommendations": run.write_table("recommendations", pd.concat(recommendations))}
        if embeddings:
            rows["item_embeddings"] = run.write_table("item_embeddings", pd.concat(embeddings))
            rows["user_interests"] = run.write_table("user_interests", pd.concat(interests))
        info["rows"] = rows


def main(argv=None) -> None:
    main_guard(lambda config: export(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
