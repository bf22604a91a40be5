"""Benchmarks: commands that print figures (a table, then one JSON line per model and metric).

    python -m jobs.benchmark baselines --dataset amazon-beauty [--config FILE] [key=value ...]
    python -m jobs.benchmark alignment --dataset movielens-100k --seeds 3 --backend encoder

`baselines` runs the refresh job (ingest, Ray Train training with model selection on validation,
test evaluation) for Popularity, MIND, ComiRec-DR and ComiRec-SA. Then, per neural model, it
measures training throughput (samples/s, timed inside the epoch loop, same recipe, model, data and
thread count) of Ray Train with one worker against the plain in-process torch loop, interleaved
plain -> Ray Train -> plain over `--throughput-epochs` epochs each so that drift in the machine's
speed hits both sides alike; the ratio is Ray Train / mean of the two plain measurements.

`alignment` trains ComiRec-SA with and without the semantic-cluster alignment loss on the same
splits for several seeds and prints mean ± std of the test metrics plus the grouping statistics
(clusters per user, coherence against random partitions) of the chosen backend.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics

import pandas as pd
import torch

from jobs.evaluate import metrics_table
from jobs.refresh import refresh
from rec_core.cli import setup_logging
from rec_core.config import load_config
from rec_core.distributed import fit_with_ray_train, load_protocol
from rec_core.models import is_neural
from rec_core.scoring import MODEL_FILE
from rec_core.training import MultiInterestTraining


def plain_loop_throughput(model: str, config: dict, data, epochs: int) -> float:
    """Samples/s of the recipe's epoch loop run in this process, without Ray."""
    recipe = MultiInterestTraining(model, config["train"], data, config["seed"])
    recipe.setup()
    rates = []
    for _ in range(epochs):
        rates.append(recipe.run_epoch()["samples_per_s"])
        recipe.epoch_ += 1
    recipe.cleanup()
    return statistics.mean(rates)


def ray_train_throughput(model: str, config: dict, run, epochs: int) -> float:
    """Samples/s of the same epoch loop inside a one-worker Ray Train run (a fresh run name)."""
    short = json.loads(json.dumps(config))
    short["train"].update(epochs=epochs, patience=epochs + 1, num_workers=1)
    state = fit_with_ray_train(model, short, run.root, run_name=f"throughput-{model}")
    return statistics.mean(epoch["samples_per_s"] for epoch in state["history"])


def baselines(dataset: str, config_path: str | None, overrides: list[str], epochs: int) -> None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    config = load_config(config_path, [f"data.dataset={dataset}", f"run_id=bench-baselines-{dataset}-{stamp}",
                                       "train.num_workers=1", *overrides])
    run = refresh(config)
    metrics = run.read_table("metrics")
    data = load_protocol(run.root, config["split"]["history_fraction"])
    figures = {}
    for model in config["models"]:
        stage = run.manifest["stages"].get(f"train:{model}", {})
        entry = {"train_wall_s": stage.get("seconds", 0.0)}
        if is_neural(model):
            history = torch.load(run.root / "models" / model / MODEL_FILE, weights_only=False)["history"]
            plain_before = plain_loop_throughput(model, config, data, epochs)
            ray_rate = ray_train_throughput(model, config, run, epochs)
            plain_after = plain_loop_throughput(model, config, data, epochs)
            plain_rate = (plain_before + plain_after) / 2
            entry.update(epochs=len(history), ray_train_samples_per_s=round(ray_rate, 1),
                         plain_loop_samples_per_s=round(plain_rate, 1),
                         plain_before_after=[round(plain_before, 1), round(plain_after, 1)],
                         ray_vs_plain_throughput=round(ray_rate / plain_rate, 3))
        figures[model] = entry
    print(f"\n== baselines on {dataset} (test split, {len(data.test.user_ids)} users; run {run.root})")
    print(metrics_table(metrics))
    print("\n" + "\n".join(f"{model:12s} {json.dumps(entry)}" for model, entry in figures.items()))
    test = metrics[(metrics["split"] == "test") & (metrics["k"].isin([20, 50]))]
    for row in test.itertuples():
        print(json.dumps({"benchmark": "baselines", "dataset": dataset, "model": row.model, "metric": row.metric,
                          "k": int(row.k), "value": round(row.value, 5), **figures[row.model]}))


def alignment(dataset: str, config_path: str | None, overrides: list[str], seeds: int, backend: str) -> None:
    """ComiRec-SA with and without the alignment loss, `seeds` seeds, one semantic backend."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    rows, groupings = [], []
    for seed in range(seeds):
        config = load_config(config_path, [f"data.dataset={dataset}", f"seed={2026 + seed}",
                                           f"run_id=bench-align-{dataset}-{backend}-{stamp}-s{seed}",
                                           "models=[comirec_sa,comirec_sa+align]", f"semantic.backend={backend}",
                                           *overrides])
        run = refresh(config)
        metrics = run.read_table("metrics")
        rows.append(metrics[metrics["split"] == "test"].assign(seed=seed))
        groupings.append({k: run.manifest["stages"]["semantic"].get(k)
                          for k in ("users", "clusters_per_user", "coherence", "seconds")})
    table = pd.concat(rows)
    table = table[table["k"].isin([20, 50]) & table["metric"].isin(["recall", "ndcg"])]
    summary = table.groupby(["model", "metric", "k"])["value"].agg(["mean", "std"]).reset_index()
    print(f"\n== alignment on {dataset}, backend {backend}, {seeds} seeds (test split, mean ± std)")
    for row in summary.itertuples():
        print(f"{row.model:18s} {row.metric}@{row.k:<3d} {row.mean:.4f} ± {row.std:.4f}")
    for seed, grouping in enumerate(groupings):
        print(f"seed {seed}: grouping {json.dumps(grouping)}")
    for row in summary.itertuples():
        print(json.dumps({"benchmark": "alignment", "dataset": dataset, "backend": backend, "seeds": seeds,
                          "model": row.model, "metric": row.metric, "k": int(row.k),
                          "mean": round(row.mean, 5), "std": round(row.std, 5)}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    base = sub.add_parser("baselines", help="the four baselines: quality, train time, Ray Train vs plain loop")
    base.add_argument("--dataset", required=True)
    base.add_argument("--config", default=None)
    base.add_argument("--throughput-epochs", type=int, default=2,
                      help="epochs timed for each of plain, Ray Train, plain")
    base.add_argument("overrides", nargs="*")
    align = sub.add_parser("alignment", help="ComiRec-SA with and without alignment, several seeds")
    align.add_argument("--dataset", required=True)
    align.add_argument("--config", default=None)
    align.add_argument("--seeds", type=int, default=3)
    align.add_argument("--backend", choices=["encoder", "llm"], default="encoder")
    align.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    setup_logging()
    if args.benchmark == "baselines":
        baselines(args.dataset, args.config, args.overrides, args.throughput_epochs)
    else:
        alignment(args.dataset, args.config, args.overrides, args.seeds, args.backend)


if __name__ == "__main__":
    main()
