"""The incremental night against a full run on the same data (issue 14), through `python -m jobs.benchmark`.

    python -m jobs.benchmark incremental --dataset amazon-beauty --config configs/amazon-beauty.yaml \
        --changed 0.01 [--models comirec_sa+align+contrast] [key=value ...]

The data set (loaded with the config's data settings, k-core included) is written twice in the
generic format (rec_core.data.datasets) into one folder, as a nightly upstream export would
overwrite it: *yesterday* lacks the last interaction of a seeded `--changed` share of the users,
*today* has everything. Under `<output_dir>/<name>/`:

1. `nightly/night-1`: a full run on yesterday's data, published (`latest`);
2. `nightly/night-2`: today's data with `previous_run=latest`: the incremental night;
3. `full/full-2`: today's data without a previous run: what the incremental night stands for. Its
   output_dir starts with a copy of the caches (text embeddings, LLM answers) as night 2 found them,
   so both runs pay for the same new texts and prompts, as a nightly full retrain would.

It prints wall time (each run's total and per stage), histories grouped against kept, LLM prompts
sent (llm backend: a prompt not in the cache), cliques kept and solved, each model's start, and the
paired per-user difference of every model's test metrics between night 2 and the full run
(bootstrap 95% CI): the goals are a wall time <= 20% of the full run's, exactly the changed users'
prompts, and test metrics within the paired CI of the full run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.benchmarks import add_data_arguments, local_folder
from jobs.benchmarks.models import print_paired
from rec_core.data.datasets import load_dataset, write_generic
from rec_core.run.config import load_config

CACHES = ("text_embedding_cache", "llm_cache")  # the folders of output_dir that runs share (default places)


def yesterday(interactions: pd.DataFrame, changed_share: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Interactions without the last one of a seeded share of the users (those with 3 or more, so
    every changed user still has a history); the changed users' dense ids."""
    counts = interactions.groupby("user_id").size()
    eligible = np.sort(counts.index[counts >= 3].to_numpy())
    changed = np.sort(np.random.default_rng(seed).choice(eligible, max(1, round(changed_share * len(counts))),
                                                         replace=False))
    last = interactions.reset_index(drop=True).groupby("user_id").tail(1)
    dropped = last.index[last["user_id"].isin(changed)]
    return interactions.reset_index(drop=True).drop(index=dropped), changed


def changed_grouped_users(root: Path, changed_sources: pd.Series, config: dict) -> int:
    """How many changed users are among those the semantic stage groups (its selected training users)."""
    from jobs.semantic import select_users

    users = pd.read_parquet(root / "users").set_index("source_id")["user_id"]
    selected = select_users(pd.read_parquet(root / "user_splits"), config["semantic"]["max_users"],
                            config["semantic"]["selection_seed"])
    return len(set(users[changed_sources.astype(str)].tolist()) & set(selected.tolist()))


def run_summary(root: Path) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    stages = manifest["stages"]
    prompts = sum(stages.get(s, {}).get("llm", {}).get("sent", 0) for s in ("semantic", "crowd_semantic"))
    return {"run": root.name, "total_seconds": manifest["total_seconds"],
            "stage_seconds": {name: record.get("seconds") for name, record in stages.items()},
            "plan": manifest.get("incremental"), "llm_prompts_sent": prompts,
            "semantic": stages.get("semantic", {}).get("histories"),
            "crowd_semantic": stages.get("crowd_semantic", {}).get("histories"),
            "cliques": {k: v for k, v in stages.get("synthesize", {}).get("cliques", {}).items()
                        if k in ("cliques", "kept_from_previous_run", "previous_dropped", "users_in_kept_cliques")},
            "train": {name[len("train:"):]: {"start": record.get("start"), "epochs": record.get("epochs")}
                      for name, record in stages.items() if name.startswith("train:")}}


def incremental_benchmark(args) -> None:
    from jobs.refresh import refresh

    base = [f"data.dataset={args.dataset}", *args.overrides]
    config = load_config(args.config, base)
    data = config["data"]
    tables = load_dataset(data["dataset"], data["data_dir"], data["path"], data["k_core"], data["unknown_items"],
                          data["ml1m_ratings"])
    root = local_folder(config, args.name, "incremental")
    if root.exists():
        shutil.rmtree(root)
    folder = root / "data"
    before, changed = yesterday(tables.interactions, args.changed, config["seed"])
    print(f"{args.dataset}: {tables.interactions['user_id'].nunique()} users, {len(changed)} with a new "
          f"interaction today ({args.changed:.1%})", flush=True)
    generic = ["data.dataset=generic", f"data.path={folder}", "data.k_core=0", f"models={args.models}"]
    nights = [f"output_dir={root / 'nightly'}", "previous_run=latest", "publish.enabled=true"]
    write_generic(tables.items, before, tables.users, folder)
    refresh(load_config(args.config, [*base, *generic, *nights, "run_id=night-1"]))
    for cache in CACHES:  # the full run starts from the caches night 2 starts from
        if (root / "nightly" / cache).is_dir():
            shutil.copytree(root / "nightly" / cache, root / "full" / cache)
    write_generic(tables.items, tables.interactions, tables.users, folder)
    refresh(load_config(args.config, [*base, *generic, *nights, "run_id=night-2"]))
    refresh(load_config(args.config, [*base, *generic, f"output_dir={root / 'full'}", "publish.enabled=false",
                                      "run_id=full-2"]))
    night, full = run_summary(root / "nightly" / "night-2"), run_summary(root / "full" / "full-2")
    print(f"\nincremental night 2: {night['total_seconds']} s; full run on the same data: {full['total_seconds']} s "
          f"(ratio {night['total_seconds'] / full['total_seconds']:.3f}; goal <= 0.20)")
    for stage in full["stage_seconds"]:
        print(f"  {stage:32s} {night['stage_seconds'].get(stage)!s:>8} s   full {full['stage_seconds'][stage]!s:>8} s")
    regrouped = changed_grouped_users(root / "nightly" / "night-2", tables.users.loc[changed, "source_id"], config)
    print(f"LLM prompts sent: night 2 {night['llm_prompts_sent']} (the changed users the semantic stage groups: "
          f"{regrouped}), the full run {full['llm_prompts_sent']} (from the same cache)")
    print(f"semantic histories: {night['semantic']}; crowd: {night['crowd_semantic']}; cliques: {night['cliques']}")
    print(f"training: {night['train']}")
    per_user = pd.concat([pd.read_parquet(root / "nightly" / "night-2" / "user_metrics").assign(run="night"),
                          pd.read_parquet(root / "full" / "full-2" / "user_metrics").assign(run="full")])
    per_user = per_user[per_user["split"] == "test"]
    paired = []
    for model in args.models.strip("[]").split(","):
        rows = per_user[per_user["model"] == model]
        labelled = pd.concat([rows[rows["run"] == "night"].assign(model=f"{model} (incremental)"),
                              rows[rows["run"] == "full"]])
        paired += print_paired(labelled, [f"{model} (incremental)"], model)
    print(json.dumps({"benchmark": "incremental", "dataset": args.dataset, "changed_users": int(len(changed)),
                      "changed_users_grouped": regrouped,
                      "night": night, "full": full, "paired": paired}, default=str))


def add_commands(commands) -> None:
    bench = commands.add_parser("incremental", help="an incremental night against a full run on the same data")
    add_data_arguments(bench, dataset_required=True)
    bench.add_argument("--changed", type=float, default=0.01, help="share of users with a new interaction today")
    bench.add_argument("--models", default="[comirec_sa+align+contrast]", help="the models of every run")
    bench.add_argument("--name", default="bench-incremental", help="folder under output_dir (replaced)")
    bench.set_defaults(run=incremental_benchmark)
