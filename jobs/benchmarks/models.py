"""Model benchmarks (run through `python -m jobs.benchmark <name>`; each prints figures).

    python -m jobs.benchmark baselines --dataset amazon-beauty [--config FILE] [key=value ...]
    python -m jobs.benchmark alignment --dataset movielens-100k --seeds 3 --backend encoder
    python -m jobs.benchmark ablation --dataset amazon-beauty --config configs/amazon-beauty.yaml --seeds 3

`baselines` runs the refresh job (ingest, Ray Train training with model selection on validation,
test evaluation) for Popularity, MIND, ComiRec-DR and ComiRec-SA. Then, per neural model, it
measures training throughput (samples/s, timed inside the epoch loop, same recipe, model, data and
thread count) of Ray Train with one worker against the plain in-process torch loop, interleaved
plain -> Ray Train -> plain over `--throughput-epochs` epochs each so that drift in the machine's
speed hits both sides alike; the ratio is Ray Train / mean of the two plain measurements.

`alignment` trains ComiRec-SA with and without the semantic-cluster alignment loss on the same
splits for several seeds and prints mean ± std of the test metrics (and of the best validation
Recall@50, the figure to choose settings on) plus the grouping statistics (clusters per user,
coherence against random partitions) of the chosen backend.

`ablation` does the same for the dual-level model's parts: the ComiRec-SA backbone, + alignment,
+ contrastive (crowd level), and the full model (both), printing Recall/NDCG/HitRate@{20,50} and
the semantic, synthesize and crowd_semantic stage statistics of every seed.
"""

from __future__ import annotations

import json
import statistics

import pandas as pd
import torch

from jobs.benchmarks import add_data_arguments, bench_run_id
from jobs.evaluate import metrics_table
from jobs.refresh import refresh
from rec_core.models.names import is_neural
from rec_core.run.config import load_config
from rec_core.train.ray_train import fit_with_ray_train, load_protocol
from rec_core.train.recipe import MultiInterestTraining
from rec_core.train.scoring import MODEL_FILE


BASELINE_MODELS = ["popularity", "mind", "comirec_dr", "comirec_sa"]


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
    config = load_config(config_path, [f"data.dataset={dataset}", f"run_id={bench_run_id('baselines', dataset)}",
                                       "train.num_workers=1", f"models=[{','.join(BASELINE_MODELS)}]", *overrides])
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


ALIGNMENT_MODELS = ["comirec_sa", "comirec_sa+align"]
ABLATION_MODELS = ["comirec_sa", "comirec_sa+align", "comirec_sa+contrast", "comirec_sa+align+contrast"]
METRICS = ["recall", "ndcg", "hit_rate", "valid_recall"]


def compare_models(benchmark: str, models: list[str], dataset: str, config_path: str | None,
                   overrides: list[str], seeds: int, backend: str) -> None:
    """`models` trained on the same splits for seeds 2026.. 2026+seeds-1; mean ± std of the test metrics."""
    stamp = bench_run_id(f"{benchmark}-{backend}", dataset)
    rows, stages = [], []
    for seed in range(seeds):
        config = load_config(config_path, [f"data.dataset={dataset}", f"seed={2026 + seed}",
                                           f"run_id={stamp}-s{seed}",
                                           f"models=[{','.join(models)}]", f"semantic.backend={backend}",
                                           *overrides])
        run = refresh(config)
        metrics = run.read_table("metrics")
        rows.append(metrics[metrics["split"] == "test"].assign(seed=seed))
        rows.append(pd.DataFrame([{"model": model, "metric": "valid_recall", "k": 50, "seed": seed,
                                   "value": run.manifest["stages"][f"train:{model}"]["best_valid_recall@50"]}
                                  for model in config["models"]]))
        stages.append({stage: {k: info.get(k) for k in ("users", "clusters_per_user", "coherence", "solutions",
                                                        "cliques", "objective_over_greedy", "seconds") if k in info}
                       for stage, info in run.manifest["stages"].items()
                       if stage in ("semantic", "synthesize", "crowd_semantic")})
    table = pd.concat(rows)
    table = table[table["k"].isin([20, 50]) & table["metric"].isin(METRICS)]
    summary = table.groupby(["model", "metric", "k"])["value"].agg(["mean", "std"]).reset_index()
    summary["model"] = pd.Categorical(summary["model"], models)
    summary["metric"] = pd.Categorical(summary["metric"], METRICS)
    summary = summary.sort_values(["model", "metric", "k"])
    print(f"\n== {benchmark} on {dataset}, backend {backend}, {seeds} seeds (test split, mean ± std; "
          "valid_recall@50: the best validation score, what model selection saw)")
    wide = summary.assign(cell=[f"{m:.4f} ± {s:.4f}" for m, s in zip(summary["mean"], summary["std"])])
    wide = wide.pivot(index="model", columns=["metric", "k"], values="cell")
    wide.columns = [f"{metric}@{k}" for metric, k in wide.columns]
    print(wide.to_string())
    for seed, info in enumerate(stages):
        print(f"seed {seed}: {json.dumps(info)}")
    for row in summary.itertuples():
        print(json.dumps({"benchmark": benchmark, "dataset": dataset, "backend": backend, "seeds": seeds,
                          "model": row.model, "metric": row.metric, "k": int(row.k),
                          "mean": round(row.mean, 5), "std": round(row.std, 5)}))


def add_commands(commands) -> None:
    base = commands.add_parser("baselines", help="the four baselines: quality, train time, Ray Train vs plain loop")
    add_data_arguments(base, dataset_required=True)
    base.add_argument("--throughput-epochs", type=int, default=2,
                      help="epochs timed for each of plain, Ray Train, plain")
    base.set_defaults(run=lambda args: baselines(args.dataset, args.config, args.overrides, args.throughput_epochs))
    for name, models, text in (("alignment", ALIGNMENT_MODELS, "ComiRec-SA with and without alignment, several seeds"),
                               ("ablation", ABLATION_MODELS, "backbone, +align, +contrast, full: several seeds")):
        comparison = commands.add_parser(name, help=text)
        add_data_arguments(comparison, dataset_required=True)
        comparison.add_argument("--seeds", type=int, default=3)
        comparison.add_argument("--backend", choices=["encoder", "llm"], default="encoder")
        comparison.set_defaults(run=lambda args, name=name, models=models: compare_models(
            name, models, args.dataset, args.config, args.overrides, args.seeds, args.backend))
