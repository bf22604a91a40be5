"""Stage: evaluate every configured model on the validation and test users with the one evaluator
(full ranking, history excluded, ties by item id). Writes `user_metrics` (model, split, user_id,
metric, k, value: what paired comparisons need) and their means, `metrics` (model, split, metric,
k, value), `test_recommendations` (model, user_id, rank, item_id, score: the top `eval.top_k` of
each test user from its history part, dense ids, what the metrics scored), and prints the test
metrics. The serving lists, for every user from the full history, are the export stage's."""

from __future__ import annotations

import logging

import pandas as pd

from jobs.ray_runtime import init_ray
from rec_core.eval.tables import wide_metrics
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run
from rec_core.storage.location import parquet_rows
from rec_core.train.shards import run_shards, shards, split_ids, train_item_counts

log = logging.getLogger(__name__)

SPLITS = ("valid", "test")
METRIC_ORDER = ("recall", "ndcg", "hit_rate")


def metrics_table(metrics: pd.DataFrame, split: str = "test") -> str:
    return wide_metrics(metrics, split).to_string(float_format=lambda v: f"{v:.4f}")


def scorer_settings(run: Run) -> dict:
    """ShardScorer's arguments for this run (rec_core.train.shards), shared by the evaluation and the export."""
    num_items = parquet_rows(run.table_path("items") / "part-0.parquet")
    models = list(run.config["models"])
    return {"run_root": str(run.root), "models": models, "num_items": num_items,
            # a pass over every interaction: only for a popularity model, the one that scores by them
            "popularity_counts": train_item_counts(run.root, num_items) if "popularity" in models else None,
            "history_fraction": run.config["split"]["history_fraction"],
            "batch_size": run.config["train"]["eval_batch_size"]}


def score_shards(run: Run, settings: dict, tasks: list, users: int, what: str) -> list:
    """The tasks on Ray actors (Ray joined or started here) from `scoring.distributed_min_users`
    users on, else in this process (rec_core.train.shards.run_shards)."""
    scoring = run.config["scoring"]
    distributed = users >= scoring["distributed_min_users"]
    if distributed:
        init_ray(run.config["ray"])
    return run_shards(settings, tasks, scoring["workers"], distributed, what)


def mean_metrics(per_user: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """model, split, metric, k, value (the mean over users) and users, in model, split, k, metric order."""
    grouped = per_user.groupby(["model", "split", "metric", "k"], sort=False)["value"]
    metrics = grouped.mean().reset_index().assign(users=grouped.size().to_numpy())
    place = {"model": models.index, "split": SPLITS.index, "metric": METRIC_ORDER.index}
    return metrics.sort_values(["model", "split", "k", "metric"], kind="stable", ignore_index=True,
                               key=lambda column: column.map(place[column.name]) if column.name in place else column)


def evaluate_run(run: Run) -> pd.DataFrame:
    """Shards of the valid and test users are ranked by rec_core.train.shards (on Ray actors from
    `scoring.distributed_min_users` evaluated users on); the means are taken over the per-user rows
    as they were written, so they are those of one process."""
    with run.stage("evaluate") as info:
        models, settings = list(run.config["models"]), scorer_settings(run)
        ks, batch, scoring = run.config["eval"]["ks"], settings["batch_size"], run.config["scoring"]
        size = max(batch, scoring["shard_users"] // batch * batch)  # whole batches: one process's batches
        ids = split_ids(run.root)
        with run.sharded_table("user_metrics") as metric_folder, \
                run.sharded_table("test_recommendations") as list_folder:
            folders = {"user_metrics": str(metric_folder), "test_recommendations": str(list_folder)}
            tasks = [("evaluate", (split, f"{split}-{index:05d}", part, ks, run.config["eval"]["top_k"], folders))
                     for split in SPLITS for index, part in enumerate(shards(ids[split], size))]
            evaluated = sum(len(ids[split]) for split in SPLITS)
            written = score_shards(run, settings, tasks, evaluated, "evaluate")
        per_user = run.read_table("user_metrics")
        metrics = mean_metrics(per_user, models)
        del per_user
        k = max(ks)
        for (name, split), figures in metrics[metrics["k"] == k].groupby(["model", "split"], sort=False):
            value = figures.set_index("metric")["value"]
            log.info("%s %s: recall@%d %.4f ndcg@%d %.4f (%d users)", name, split, k, value.get("recall", float("nan")),
                     k, value.get("ndcg", float("nan")), figures["users"].iloc[0])
        empty = [f"{name} {split}" for name in models for split in SPLITS
                 if not ((metrics["model"] == name) & (metrics["split"] == split)).any()]
        if empty:
            raise ValueError(f"no user with a retrievable target to evaluate ({', '.join(empty)})")
        metrics = metrics.drop(columns="users")
        info["rows"] = {"user_metrics": sum(part["user_metrics"] for part in written),
                        "metrics": run.write_table("metrics", metrics),
                        "test_recommendations": sum(part.get("test_recommendations", 0) for part in written)}
    print(f"\nTest metrics ({run.config['data']['dataset']}, {len(ids['test'])} test users):")
    print(metrics_table(metrics), flush=True)
    return metrics


def main(argv=None) -> None:
    main_guard(lambda config: evaluate_run(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
