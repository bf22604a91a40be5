"""Stage 3, evaluate: every configured model on the validation and test users with the one
evaluator (full ranking, history excluded); writes the `metrics` table
(model, split, metric, k, value) and prints the test metrics."""

from __future__ import annotations

import logging

import pandas as pd

from rec_core.eval.evaluator import evaluate
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run
from rec_core.train.ray_train import load_protocol
from rec_core.train.scoring import Scorer

log = logging.getLogger(__name__)


def metric_rows(model: str, split: str, metrics: dict) -> list[dict]:
    rows = []
    for key, value in metrics.items():
        if "@" in key:
            name, k = key.split("@")
            rows.append({"model": model, "split": split, "metric": name, "k": int(k), "value": float(value)})
    return rows


def metrics_table(metrics: pd.DataFrame, split: str = "test") -> str:
    view = metrics[metrics["split"] == split].copy()
    view["column"] = view["metric"] + "@" + view["k"].astype(str)
    table = view.pivot(index="model", columns="column", values="value")
    order = sorted(table.columns, key=lambda c: (c.split("@")[0], int(c.split("@")[1])))
    return table[order].to_string(float_format=lambda v: f"{v:.4f}")


def evaluate_run(run: Run) -> pd.DataFrame:
    with run.stage("evaluate") as info:
        data = load_protocol(run.root, run.config["split"]["history_fraction"])
        ks, batch = run.config["eval"]["ks"], run.config["train"]["eval_batch_size"]
        rows = []
        for name in run.config["models"]:
            scorer = Scorer(name, data, run.root / "models" / name)
            for split, eval_set in (("valid", data.valid), ("test", data.test)):
                metrics, _ = evaluate(scorer, eval_set, data.num_items, ks=ks, batch_size=batch)
                rows += metric_rows(name, split, metrics)
                log.info("%s %s: recall@50 %.4f ndcg@50 %.4f (%d users)", name, split,
                         metrics.get("recall@50", float("nan")), metrics.get("ndcg@50", float("nan")),
                         metrics["users"])
        metrics = pd.DataFrame(rows)
        info["rows"] = {"metrics": run.write_table("metrics", metrics)}
    print(f"\nTest metrics ({run.config['data']['dataset']}, {len(data.test.user_ids)} test users):")
    print(metrics_table(metrics), flush=True)
    return metrics


def main(argv=None) -> None:
    main_guard(lambda config: evaluate_run(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
