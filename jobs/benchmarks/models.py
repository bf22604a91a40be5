"""Model benchmarks (run through `python -m jobs.benchmark <name>`; each prints figures).

    python -m jobs.benchmark baselines --dataset amazon-beauty [--config FILE] [key=value ...]
    python -m jobs.benchmark alignment --dataset movielens-100k --seeds 3 --backend encoder
    python -m jobs.benchmark ablation --dataset amazon-beauty --config configs/amazon-beauty.yaml --seeds 5 \
        [--models comirec_sa,sasrec,comirec_sa+align+contrast] [--name beauty-ablation]
    python -m jobs.benchmark paired runs/<run id> [runs/<other run id> ...] --against comirec_sa
    python -m jobs.benchmark descriptions --dataset amazon-beauty --config configs/amazon-beauty.yaml --seeds 5 \
        --llm-nodes 500 [--with comirec_sa] [--name beauty-desc]
    python -m jobs.benchmark sweep --dataset amazon-beauty --config configs/amazon-beauty.yaml \
        --model comirec_sa+contrast --grid contrast.weight=0.05,0.1,0.2 --grid contrast.temperature=0.1,0.2

`baselines` runs the refresh job (ingest, Ray Train training with model selection on validation,
test evaluation) for Popularity, MIND, ComiRec-DR, ComiRec-SA, REMI and SASRec. Then, per neural model, it
measures training throughput (samples/s, timed inside the epoch loop, same recipe, model, data and
thread count) of Ray Train with one worker against the plain in-process torch loop, interleaved
plain -> Ray Train -> plain over `--throughput-epochs` epochs each so that drift in the machine's
speed hits both sides alike; the ratio is Ray Train / mean of the two plain measurements.

`alignment` trains a backbone (`--backbone`, default ComiRec-SA) with and without the
semantic-cluster alignment loss in several runs (`--seeds N`; `--vary init|split|both` says
which seed the runs vary) and prints mean ± std of
the test metrics (and of the best validation Recall@50, the figure to choose settings on), the
paired per-user differences against the backbone with bootstrap 95% intervals, the model
validation chooses, and the grouping statistics of the chosen backend.

`ablation` does the same for the dual-level model's parts: the backbone (`--backbone remi` runs
them on REMI), + alignment, + contrastive (crowd level), the full model (both), and the
random-cluster controls of +contrast
and of the full model (`+shuffled`: the same losses on clusters re-partitioned at random with the
same sizes), printing Recall/NDCG/HitRate@{20,50}, the paired differences against the backbone and
the semantic, synthesize and crowd_semantic stage statistics of every run. (Each auxiliary weight
at zero is the backbone itself, weight for weight: tests/test_models.py checks it.)

`alignment` and `ablation` take `--models` (an explicit list, the first the reference) instead of
the backbone's variants, and `--name`: the runs are `<name>-s<i>`, so naming an earlier, interrupted
comparison reuses its finished runs and resumes the rest.

`paired` reads finished runs' `user_metrics` and prints every model against one of them, paired
per user with bootstrap 95% intervals (what `alignment` and `ablation` print at their end). A run
given as `<label>=<dir>` has its models reported as `<model>[<label>]`, so the same model trained
under two settings (e.g. two description backends, in runs of different comparisons) is paired
rather than averaged together.

`descriptions` (GaCLLM, issue 12) trains `lightgcn` (and `--with` models) in run `<name>-s<i>` and
`lightgcn+desc` once per description variant in runs `<name>-<variant>-s<i>` with the same seeds:
`layer0` (graph.layers=0: the catalogue text and the user template only, no graph hop), `encoder`
(the embedding-mix aggregator) and `llm` (the LLM aggregator on `--llm-nodes` nodes, the rest by the
encoder); all paired per user against `lightgcn`. `--variants` picks them (default layer0, encoder,
llm, each with `desc.fusion=sum`); `layer0-aligned`, `encoder-aligned` and `llm-aligned` are the same
descriptions with `desc.fusion=none` (the descriptions in the alignment loss only). The describe stage's diagnostic and LLM figures of every
run are printed at the end.

`sweep` trains one model for every point of a settings grid, stopping after training (validation
only, the test split is never read), and prints the point with the best validation Recall@50 as
the YAML to put into configs/<dataset>.yaml. A grid of training settings only (train.*, align.*,
contrast.*) computes the stages before training once and shares them between the points.
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import pandas as pd
import yaml

from jobs.benchmarks import add_data_arguments, bench_run_id
from jobs.evaluate import metrics_table
from jobs.refresh import refresh
from rec_core.eval.paired import paired_difference
from rec_core.models.names import is_neural
from rec_core.run.config import ConfigError, load_config
from rec_core.run.directory import TRAINING_SECTIONS, fork_upstream
from rec_core.train.ray_train import fit_with_ray_train, load_protocol
from rec_core.train.recipe import MultiInterestTraining
from rec_core.train.saved_model import load_model_config


BASELINE_MODELS = ["popularity", "mind", "comirec_dr", "comirec_sa", "remi", "sasrec"]


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


# a benchmark's runs are measurements, not nightly outputs: no quality gate, no `latest` pointer
NOT_PUBLISHED = "publish.enabled=false"


def baselines(dataset: str, config_path: str | None, overrides: list[str], epochs: int) -> None:
    config = load_config(config_path, [f"data.dataset={dataset}", f"run_id={bench_run_id('baselines', dataset)}",
                                       "train.num_workers=1", f"models=[{','.join(BASELINE_MODELS)}]", NOT_PUBLISHED,
                                       *overrides])
    run = refresh(config)
    metrics = run.read_table("metrics")
    data = load_protocol(run.root, config["split"]["history_fraction"])
    figures = {}
    for model in config["models"]:
        stage = run.manifest["stages"].get(f"train:{model}", {})
        entry = {"train_wall_s": stage.get("seconds", 0.0)}
        if is_neural(model):
            history = load_model_config(run.root / "models" / model)["history"]
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


ALIGNMENT_VARIANTS = ["", "+align"]
# the backbone, each level, both, and the random-cluster controls of the crowd level and of both
ABLATION_VARIANTS = ["", "+align", "+contrast", "+align+contrast", "+contrast+shuffled", "+align+contrast+shuffled"]
METRICS = ["recall", "ndcg", "hit_rate", "valid_recall"]


def paired_metrics(cutoffs=(20, 50)) -> list[tuple[str, int]]:
    """Recall and NDCG at each cut-off, the largest first."""
    return [(metric, k) for k in sorted(cutoffs, reverse=True) for metric in ("recall", "ndcg")]


SEED_KEYS = {"init": ["seed"], "split": ["split.seed"], "both": ["seed", "split.seed"]}


def print_paired(per_user: pd.DataFrame, models: list[str], reference: str, cutoffs=(20, 50)) -> list[dict]:
    """Each model against `reference` on per-user test rows (user_metrics, optionally with a run
    column): paired differences with bootstrap 95% CIs, printed, and returned as dicts."""
    print(f"\npaired against {reference} (per-user differences, each user averaged over its runs; "
          "bootstrap 95% CI):")
    paired = []
    for model in models:
        for metric, k in paired_metrics(cutoffs):
            difference = paired_difference(per_user[per_user["model"] == model],
                                           per_user[per_user["model"] == reference], metric, k)
            paired.append({"model": model, "against": reference, **difference.as_dict()})
            print(f"  {model:28s} {difference.metric:10s} {difference.difference:+.4f} "
                  f"[{difference.low:+.4f}, {difference.high:+.4f}] ({difference.relative:+.1%}; "
                  f"{difference.users} users, {difference.runs} runs)")
    return paired


def scored_cutoffs(scored, requested: tuple[int, ...] | None, where: str) -> tuple[int, ...]:
    """The cut-offs to report: `requested`, each of which the runs must have scored, or (None) all
    that they scored (the evaluate stage scores eval.ks: 10,20,50 by default, 5,10,20 on sessions)."""
    scored = sorted({int(k) for k in scored})
    if requested is None:
        return tuple(scored)
    missing = [k for k in requested if k not in scored]
    if missing:
        raise ConfigError(f"cut-offs {missing} are not scored by {where} (it scores {scored}: eval.ks)")
    return tuple(requested)


def parse_cutoffs(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        cutoffs = tuple(int(k) for k in text.split(","))
    except ValueError:
        raise ConfigError(f"--ks {text!r}: expected comma-separated cut-offs, e.g. 5,10,20") from None
    if not cutoffs or min(cutoffs) < 1:
        raise ConfigError(f"--ks {text!r}: cut-offs must be positive")
    return cutoffs


def paired_report(run_dirs: list[str], against: str, cutoffs: tuple[int, ...] | None = None) -> None:
    """The paired comparison of every model of finished runs (their test `user_metrics`) against
    one of them, at `cutoffs` (default: every cut-off the runs scored). A model's rows are averaged
    per user over the runs that have it, so the runs may hold different models (e.g. a backbone
    from one comparison, a variant trained later with the same seeds) as long as they share the
    split; session runs' `user_id` is the session. A run given as `<label>=<dir>` reports its
    models as `<model>[<label>]` (and `against` may name one so)."""
    frames = []
    for index, entry in enumerate(run_dirs):
        label, _, folder = entry.partition("=")
        if not folder or "/" in label:  # a path that holds "=", no label
            label, folder = "", entry
        table = Path(folder) / "user_metrics"
        if not table.is_dir():
            raise ConfigError(f"{table} not found: give finished run directories (the evaluate stage writes it)")
        users = pd.read_parquet(table)
        users = users[users["split"] == "test"].assign(run=index)
        frames.append(users.assign(model=[label_model(model, label) for model in users["model"]]))
    per_user = pd.concat(frames, ignore_index=True)
    models = [m for m in dict.fromkeys(per_user["model"]) if m != against]
    if against not in set(per_user["model"]):
        raise ConfigError(f"--against {against!r} is not among the runs' models {sorted(set(per_user['model']))}")
    cutoffs = scored_cutoffs(per_user["k"], cutoffs, "these runs")
    for entry in print_paired(per_user, models, against, cutoffs):
        print(json.dumps({"benchmark": "paired", "runs": run_dirs,
                          "paired": {k: round(v, 5) if isinstance(v, float) else v for k, v in entry.items()}}))


STAGE_FIGURES = {"semantic": ("users", "clusters_per_user", "coherence", "seconds"),
                 "synthesize": ("solutions", "cliques", "objective_over_greedy", "seconds"),
                 "crowd_semantic": ("users", "clusters_per_user", "coherence", "seconds"),
                 "describe": ("backend", "layers", "category_probe", "llm_items_probe", "text_encoder",
                              "seconds")}


def compare_models(benchmark: str, models: list[str], dataset: str, config_path: str | None,
                   overrides: list[str], seeds: int, backend: str, vary: str = "init",
                   name: str | None = None, variants: list[tuple[str, list[str], list[str]]] = (),
                   cutoffs: tuple[int, ...] | None = None) -> pd.DataFrame:
    """`models` trained in `seeds` runs, run i setting the seeds named by `vary` to 2026 + i
    ("init": initialisation and sampling, on one split; "split": the split, one initialisation;
    "both"). Prints the test metrics' mean ± std over runs, then each model against the first
    (the reference) as per-user paired differences with bootstrap 95% intervals
    (rec_core.eval.paired), and the model that validation Recall@50 chooses; both at `cutoffs`,
    by default every cut-off the runs score (their config's eval.ks; checked before training).

    `variants` [(label, models, overrides)]: more models trained under other settings of the
    stages before training (e.g. graph.layers=0), each in a run `<name>-<label>-s<i>` with the same
    seeds, reported as `<model>[<label>]` and paired with the reference like the others.

    Run i is `<name>-s<i>` (`name` defaults to a fresh `bench_run_id`); given the name of an earlier
    comparison, its finished runs are reused and an interrupted one resumes, so a comparison too long
    for one sitting continues where it stopped (under the same code and data only: a run refuses
    to continue with others, rec_core.run.directory)."""
    stamp = name or bench_run_id(f"{benchmark}-{backend}-{vary}", dataset)
    groups = [("", models, []), *variants]
    models = [label_model(model, label) for label, group, _ in groups for model in group]
    rows, stages, per_user, versions = [], [], [], []
    for index in range(seeds):
        seeded = [f"{key}={2026 + index}" for key in SEED_KEYS[vary]]
        for label, group, extra in groups:
            run_id = f"{stamp}-{label}-s{index}" if label else f"{stamp}-s{index}"
            config = load_config(config_path, [f"data.dataset={dataset}", f"run_id={run_id}",
                                               f"models=[{','.join(group)}]", f"semantic.backend={backend}",
                                               NOT_PUBLISHED, *overrides, *extra, *seeded])
            cutoffs = scored_cutoffs(config["eval"]["ks"], cutoffs, f"run {run_id}")
            run = refresh(config)
            versions.append(f"{run_id}: {run.manifest['code_version']}")
            metrics = run.read_table("metrics")
            rows.append(metrics[metrics["split"] == "test"].assign(seed=index))
            rows.append(pd.DataFrame([{"model": model, "metric": "valid_recall", "k": 50, "seed": index,
                                       "value": run.manifest["stages"][f"train:{model}"]["best_valid_recall@50"]}
                                      for model in config["models"]]))
            users = run.read_table("user_metrics")
            per_user.append(users[users["split"] == "test"].assign(run=index))
            for frame in (rows[-2], rows[-1], per_user[-1]):
                frame["model"] = [label_model(model, label) for model in frame["model"]]
            stages.append({f"{stage}[{label}]" if label else stage: {k: info.get(k) for k in figures if k in info}
                           for stage, figures in STAGE_FIGURES.items()
                           if (info := run.manifest["stages"].get(stage)) is not None})
    table = pd.concat(rows)
    table = table[(table["k"].isin(cutoffs) | (table["metric"] == "valid_recall")) & table["metric"].isin(METRICS)]
    summary = table.groupby(["model", "metric", "k"])["value"].agg(["mean", "std"]).reset_index()
    summary["model"] = pd.Categorical(summary["model"], models)
    summary["metric"] = pd.Categorical(summary["metric"], METRICS)
    summary = summary.sort_values(["model", "metric", "k"])
    per_user = pd.concat(per_user, ignore_index=True)
    test_users = per_user.groupby("run")["user_id"].nunique().tolist()
    print(f"\n== {benchmark} on {dataset}, backend {backend}, {seeds} runs varying {vary} "
          f"({', '.join(SEED_KEYS[vary])} = 2026..{2025 + seeds}); test users per run {test_users}")
    print("test split, mean ± std over runs; valid_recall@50: the best validation score, what model selection saw")
    wide = summary.assign(cell=[f"{m:.4f} ± {s:.4f}" for m, s in zip(summary["mean"], summary["std"])])
    wide = wide.pivot(index="model", columns=["metric", "k"], values="cell")
    wide.columns = [f"{metric}@{k}" for metric, k in wide.columns]
    print(wide.to_string())
    paired = print_paired(per_user, models[1:], models[0], cutoffs)
    valid = summary[summary["metric"] == "valid_recall"].set_index("model")["mean"]
    chosen = str(valid.idxmax())
    print(f"chosen on validation (mean best valid Recall@50): {chosen}")
    for version, info in zip(versions, stages):
        print(f"run {version}: {json.dumps(info, default=str)}")
    common = {"benchmark": benchmark, "dataset": dataset, "backend": backend, "runs": seeds, "varied": vary,
              "run_ids": f"{stamp}-s0..{seeds - 1}"}
    for row in summary.itertuples():
        print(json.dumps({**common, "model": row.model, "metric": row.metric, "k": int(row.k),
                          "mean": round(row.mean, 5), "std": round(row.std, 5)}))
    for entry in paired:
        print(json.dumps({**common, "paired": {key: round(value, 5) if isinstance(value, float) else value
                                               for key, value in entry.items()}}))
    print(json.dumps({**common, "chosen_on_validation": chosen}))
    return summary


def label_model(model: str, label: str) -> str:
    return f"{model}[{label}]" if label else model


# each pins desc.fusion, so a label means the same model whatever a config file sets
DESCRIPTION_VARIANTS = {"layer0": ["graph.layers=0", "desc.fusion=sum"],
                        "encoder": ["graph.backend=encoder", "desc.fusion=sum"],
                        "llm": ["graph.backend=llm", "desc.fusion=sum"],
                        "layer0-aligned": ["graph.layers=0", "desc.fusion=none"],
                        "encoder-aligned": ["graph.backend=encoder", "desc.fusion=none"],
                        "llm-aligned": ["graph.backend=llm", "desc.fusion=none"]}


def description_variants(names: str, llm_nodes: int) -> list[tuple[str, list[str], list[str]]]:
    """"layer0,encoder" -> compare_models' variants of `lightgcn+desc` (the llm ones on `llm_nodes`
    nodes; left out when that is 0)."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in DESCRIPTION_VARIANTS]
    if unknown or not chosen:
        raise ConfigError(f"--variants {names!r}: expected some of {', '.join(DESCRIPTION_VARIANTS)}")
    return [(label, ["lightgcn+desc"], DESCRIPTION_VARIANTS[label]
             + ([f"graph.max_llm_nodes={llm_nodes}"] if label.startswith("llm") else []))
            for label in chosen if not label.startswith("llm") or llm_nodes]


def parse_grid(entries: list[str]) -> list[dict[str, str]]:
    """["contrast.weight=0.05,0.1", "contrast.temperature=0.1,0.2"] -> every combination as
    {key: value} (values kept as text; the config schema types them)."""
    axes = []
    for entry in entries:
        key, _, values = entry.partition("=")
        if not key or not values:
            raise ConfigError(f"--grid {entry!r}: expected key=value1,value2,...")
        axes.append([(key.strip(), value.strip()) for value in values.split(",")])
    return [dict(point) for point in itertools.product(*axes)]


def sweep(model: str, grid: list[str], dataset: str, config_path: str | None, overrides: list[str],
          name: str | None = None) -> None:
    """Train `model` once per grid point (ingest -> ... -> train, and distill for a distilled student,
    so distill.* can be swept; never evaluate: the test split is not read) and choose the point with
    the best validation Recall@50 (ties: the first point).

    When every grid key is a training setting (rec_core.run.directory.TRAINING_SECTIONS: train.*,
    align.*, contrast.*, desc.*, session.*, distill.*), the points share the first point's upstream
    tables (UPSTREAM_STAGES: ingest, semantic, crowd and describe; `fork_upstream`) instead of
    recomputing them. Point i is run `<name>-p<i>`; an earlier sweep's
    name resumes it."""
    points = parse_grid(grid)
    stamp = name or bench_run_id(f"sweep-{model.replace('+', '-')}", dataset)
    shared = all(key.split(".")[0] in TRAINING_SECTIONS for key in points[0])
    results, first = [], None
    for index, point in enumerate(points):
        config = load_config(config_path, [f"data.dataset={dataset}", f"run_id={stamp}-p{index}",
                                           f"models=[{model}]", *overrides,
                                           *(f"{key}={value}" for key, value in point.items())])
        if shared and first is not None and not (first.parent / config["run_id"]).exists():
            fork_upstream(first, config)
        run = refresh(config, stop_after="train")
        first = first or run.root
        stage = run.manifest["stages"][f"train:{model}"]
        results.append({**point, "valid_recall@50": stage["best_valid_recall@50"], "epochs": stage.get("epochs"),
                        "run": str(run.root)})
    table = pd.DataFrame(results)
    best = table.loc[table["valid_recall@50"].idxmax()]
    print(f"\n== sweep of {model} on {dataset} ({len(points)} points; chosen on validation Recall@50 only)")
    print(table.drop(columns="run").to_string(index=False))
    chosen = {key: best[key] for key in points[0]}
    print("\nchosen; for configs/<dataset>.yaml, with this command as its comment:")
    nested: dict = {}
    for key, value in chosen.items():
        section, _, name = key.rpartition(".")
        nested.setdefault(section, {})[name] = load_config(config_path, [f"{key}={value}"])[section][name]
    print(yaml.safe_dump(nested, sort_keys=False).rstrip())
    for row in results:
        print(json.dumps({"benchmark": "sweep", "dataset": dataset, "model": model, **row}))
    print(json.dumps({"benchmark": "sweep", "dataset": dataset, "model": model, "chosen": chosen,
                      "valid_recall@50": float(best["valid_recall@50"])}))


def add_commands(commands) -> None:
    base = commands.add_parser("baselines", help="the baselines (classic, REMI, SASRec): quality, train time, Ray Train vs plain loop")
    add_data_arguments(base, dataset_required=True)
    base.add_argument("--throughput-epochs", type=int, default=2,
                      help="epochs timed for each of plain, Ray Train, plain")
    base.set_defaults(run=lambda args: baselines(args.dataset, args.config, args.overrides, args.throughput_epochs))
    for name, variants, text in (("alignment", ALIGNMENT_VARIANTS, "a backbone with and without alignment"),
                                 ("ablation", ABLATION_VARIANTS, "backbone, +align, +contrast, full, controls")):
        comparison = commands.add_parser(name, help=text)
        add_data_arguments(comparison, dataset_required=True)
        comparison.add_argument("--backbone", default="comirec_sa",
                                choices=["mind", "comirec_dr", "comirec_sa", "remi", "sasrec"],
                                help="the model the dual-level losses run on (sasrec: one interest, so +align "
                                     "assigns every cluster to it)")
        comparison.add_argument("--models", default=None,
                                help="comma-separated models instead of the backbone's variants, the first the "
                                     "reference of the paired differences (e.g. comirec_sa,sasrec,"
                                     "comirec_sa+align+contrast)")
        comparison.add_argument("--name", default=None,
                                help="run ids <name>-s<i>; the name of an earlier comparison reuses its finished "
                                     "runs (default: a fresh bench-... id)")
        comparison.add_argument("--seeds", type=int, default=5, help="runs (a headline table needs >= 5)")
        comparison.add_argument("--vary", choices=sorted(SEED_KEYS), default="init",
                                help="which seed the runs vary: init (one split), split, or both")
        comparison.add_argument("--backend", choices=["encoder", "llm"], default="encoder")
        comparison.set_defaults(run=lambda args, name=name, variants=variants: compare_models(
            name, args.models.split(",") if args.models else [args.backbone + variant for variant in variants],
            args.dataset, args.config, args.overrides, args.seeds, args.backend, args.vary, args.name))
    graph = commands.add_parser("descriptions", help="lightgcn against lightgcn+desc with layer-0 text, the "
                                                     "encoder and the LLM aggregator (GaCLLM)")
    add_data_arguments(graph, dataset_required=True)
    graph.add_argument("--seeds", type=int, default=5, help="runs (a headline table needs >= 5)")
    graph.add_argument("--llm-nodes", type=int, default=500,
                       help="graph.max_llm_nodes of the LLM variant (0 leaves that variant out)")
    graph.add_argument("--with", dest="extra", default="",
                       help="comma-separated models trained beside lightgcn for scale, e.g. comirec_sa")
    graph.add_argument("--name", default=None, help="run ids <name>[-<variant>]-s<i>; an earlier name resumes it")
    graph.add_argument("--variants", default="layer0,encoder,llm",
                       help=f"comma-separated lightgcn+desc variants, of {', '.join(DESCRIPTION_VARIANTS)} "
                            "(llm only with --llm-nodes above 0)")
    graph.set_defaults(run=lambda args: compare_models(
        "descriptions", ["lightgcn", *filter(None, args.extra.split(","))], args.dataset, args.config,
        args.overrides, args.seeds, "encoder", "init", args.name, description_variants(args.variants, args.llm_nodes)))
    pairs = commands.add_parser("paired", help="paired CIs of every model of finished runs against one of them")
    pairs.add_argument("runs", nargs="+", help="finished run directories on one split (a model's rows are averaged "
                                               "per user over the runs that have it); <label>=<dir> reports "
                                               "that run's models as <model>[<label>]")
    pairs.add_argument("--against", required=True, help="the reference model, e.g. comirec_sa")
    pairs.add_argument("--ks", default=None, help="comma-separated cut-offs, e.g. 10,20 (default: every "
                                                  "cut-off the runs scored, their eval.ks)")
    pairs.set_defaults(run=lambda args: paired_report(args.runs, args.against, parse_cutoffs(args.ks)))
    tune = commands.add_parser("sweep", help="a settings grid for one model, chosen on validation Recall@50")
    add_data_arguments(tune, dataset_required=True)
    tune.add_argument("--model", required=True, help="e.g. comirec_sa+contrast")
    tune.add_argument("--grid", action="append", required=True,
                      help="key=v1,v2,... (repeat for more axes; every combination is trained)")
    tune.add_argument("--name", default=None, help="run ids <name>-p<i>; an earlier sweep's name resumes it")
    tune.set_defaults(run=lambda args: sweep(args.model, args.grid, args.dataset, args.config, args.overrides,
                                             args.name))
