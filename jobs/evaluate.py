"""Stage: evaluate every configured model on the validation and test users with the one evaluator
(full ranking, history excluded, ties by item id). Writes `user_metrics` (model, split, user_id,
metric, k, value: what paired comparisons need) and their means, `metrics` (model, split, metric,
k, value), `test_recommendations` (model, user_id, rank, item_id, score: the top `eval.top_k` of
each test user from its history part, dense ids, what the metrics scored), and prints the test
metrics. The serving lists, for every user from the full history, are the export stage's."""

from __future__ import annotations

import logging

import pandas as pd

from rec_core.eval.evaluator import top_k, user_metrics
from rec_core.eval.tables import wide_metrics
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run
from rec_core.train.ray_train import load_protocol
from rec_core.train.scoring import Scorer

log = logging.getLogger(__name__)


def metrics_table(metrics: pd.DataFrame, split: str = "test") -> str:
    return wide_metrics(metrics, split).to_string(float_format=lambda v: f"{v:.4f}")


def evaluate_run(run: Run) -> pd.DataFrame:
    with run.stage("evaluate") as info:
        data = load_protocol(run.root, run.config["split"]["history_fraction"])
        ks, batch = run.config["eval"]["ks"], run.config["train"]["eval_batch_size"]
        per_user, test_lists = [], []
        for name in run.config["models"]:
            scorer = Scorer(name, data, run.root / "models" / name)
            ranking = top_k(scorer, data.test.histories, data.num_items, run.config["eval"]["top_k"], batch)
            test_lists.append(ranking.rows().assign(model=name)[["model", "user_id", "rank", "item_id", "score"]])
            for split, eval_set in (("valid", data.valid), ("test", data.test)):
                users = user_metrics(scorer, eval_set, data.num_items, ks=ks, batch_size=batch)
                per_user.append(users.assign(model=name, split=split))
                figures = users.groupby(["metric", "k"])["value"].mean()
                k = max(ks)
                log.info("%s %s: recall@%d %.4f ndcg@%d %.4f (%d users)", name, split, k,
                         figures.get(("recall", k), float("nan")), k, figures.get(("ndcg", k), float("nan")),
                         users["user_id"].nunique())
        per_user = pd.concat(per_user, ignore_index=True)[["model", "split", "user_id", "metric", "k", "value"]]
        metrics = per_user.groupby(["model", "split", "metric", "k"], sort=False)["value"].mean().reset_index()
        info["rows"] = {"user_metrics": run.write_table("user_metrics", per_user),
                        "metrics": run.write_table("metrics", metrics),
                        "test_recommendations": run.write_table("test_recommendations", pd.concat(test_lists))}
    print(f"\nTest metrics ({run.config['data']['dataset']}, {len(data.test.user_ids)} test users):")
    print(metrics_table(metrics), flush=True)
    return metrics


def main(argv=None) -> None:
    main_guard(lambda config: evaluate_run(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
