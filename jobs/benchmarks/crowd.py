"""Max-cover benchmark (run through `python -m jobs.benchmark max-cover`; it prints figures).

    python -m jobs.benchmark max-cover --dataset amazon-beauty --config configs/amazon-beauty.yaml

On the real user cliques of a data set (settings in `crowd`), every instance is solved twice: by
greedy alone and by CP-SAT (greedy as hint and fallback; parallel Ray tasks). Printed: total
objective of each, how many instances CP-SAT improved, the status counts, the mean proven gap
((bound - objective) / bound, for greedy against CP-SAT's bound), and solve times. Then the growth
table: instances made of 1, 2, 4, 8, 16 consecutive cliques merged (real members, larger
candidate sets) solved with the same settings, to show how solve time grows with instance size.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from jobs.benchmarks import add_data_arguments, ingested_run
from jobs.synthesize import crowd_instances, solver_config, training_interactions, user_cliques
from jobs.ray_runtime import init_ray
from rec_core.crowd.max_cover import OPTIMAL, SolverConfig
from rec_core.crowd.synthesis import item_label_sets, solve_instances

MERGED_SIZES = (1, 2, 4, 8, 16)
MERGED_SAMPLES = 20


def _summary(instances, solutions) -> dict:
    objective = np.array([s.objective for s in solutions], dtype=float)
    greedy = np.array([s.greedy_objective for s in solutions], dtype=float)
    bound = np.array([s.bound for s in solutions], dtype=float)
    seconds = np.array([s.solve_seconds for s in solutions])
    return {"instances": len(solutions), "mean_candidates": round(float(np.mean([len(i.items) for i in instances])), 1),
            "mean_elements": round(float(np.mean([len(i.weights) for i in instances])), 1),
            "objective_over_greedy": round(float(objective.sum() / greedy.sum()), 5),
            "improved_over_greedy": int((objective > greedy).sum()),
            "optimal_share": round(float(np.mean([s.status == OPTIMAL for s in solutions])), 4),
            "status": pd.Series([s.status for s in solutions]).value_counts().to_dict(),
            "mean_gap": round(float(np.mean((bound - objective) / np.maximum(bound, 1))), 5),
            "greedy_mean_gap": round(float(np.mean((bound - greedy) / np.maximum(bound, 1))), 5),
            "seconds_mean": round(float(seconds.mean()), 4), "seconds_p95": round(float(np.quantile(seconds, 0.95)), 4),
            "seconds_max": round(float(seconds.max()), 4)}


def max_cover(dataset: str, config_path: str | None, overrides: list[str]) -> None:
    run = ingested_run(dataset, config_path, overrides, "max-cover")
    crowd = run.config["crowd"]
    interactions = training_interactions(run)
    labels = item_label_sets(run.read_table("items"))
    began = time.perf_counter()
    cliques = user_cliques(crowd).fit(interactions)
    clique_seconds = time.perf_counter() - began
    instances = crowd_instances(cliques.cliques_, interactions, labels, crowd)
    init_ray(run.config["ray"])
    cp_sat = solver_config(run.config)
    began = time.perf_counter()
    greedy_solutions = solve_instances(instances, SolverConfig(use_cp_sat=False), crowd["chunk_size"])
    greedy_wall = time.perf_counter() - began
    began = time.perf_counter()
    solutions = solve_instances(instances, cp_sat, crowd["chunk_size"])
    cp_sat_wall = time.perf_counter() - began
    if [s.objective for s in greedy_solutions] != [s.greedy_objective for s in solutions]:
        raise RuntimeError("greedy is deterministic: its objectives differ between the two passes")
    result = {"cliques": cliques.stats_, "clique_seconds": round(clique_seconds, 1),
              "greedy_wall_s": round(greedy_wall, 1), "cp_sat_wall_s": round(cp_sat_wall, 1),
              "greedy_seconds_mean": round(float(np.mean([s.solve_seconds for s in greedy_solutions])), 4),
              "cp_sat": _summary(instances, solutions)}
    growth = []
    for merged in MERGED_SIZES:
        groups = [tuple(u for clique in cliques.cliques_[start:start + merged] for u in clique)
                  for start in range(0, min(len(cliques.cliques_), merged * MERGED_SAMPLES), merged)]
        subset = crowd_instances(groups, interactions, labels, crowd)
        growth.append({"cliques_merged": merged, "members": round(float(np.mean([len(g) for g in groups])), 1),
                       **_summary(subset, solve_instances(subset, cp_sat, crowd["chunk_size"]))})
    print(f"\n== max-cover on {dataset}: {len(instances)} synthesized users from {cliques.stats_['users']} training "
          f"users (budget {crowd['budget']} items, CP-SAT {crowd['deterministic_time']} deterministic time limit, "
          f"{crowd['solver_workers']} worker(s) per instance)")
    print(f"cliques in {clique_seconds:.1f} s: {json.dumps(cliques.stats_)}")
    summary = result["cp_sat"]
    print(f"CP-SAT / greedy total objective: {summary['objective_over_greedy']:.4f}; improved "
          f"{summary['improved_over_greedy']} of {len(instances)} instances; status {summary['status']}")
    print(f"mean proven gap: CP-SAT {summary['mean_gap']:.4%}, greedy {summary['greedy_mean_gap']:.4%} "
          f"(both against CP-SAT's bound)")
    print(f"time: greedy {result['greedy_seconds_mean'] * 1000:.1f} ms/instance, CP-SAT "
          f"{summary['seconds_mean'] * 1000:.1f} ms mean, {summary['seconds_p95'] * 1000:.1f} ms p95, "
          f"{summary['seconds_max'] * 1000:.1f} ms max; wall {result['greedy_wall_s']} s vs {result['cp_sat_wall_s']} s")
    print("\nsolve time against instance size (consecutive cliques merged into one instance):")
    print(pd.DataFrame(growth)[["cliques_merged", "members", "mean_candidates", "mean_elements", "seconds_mean",
                                "seconds_max", "optimal_share", "objective_over_greedy", "mean_gap"]].to_string(index=False))
    print(json.dumps({"benchmark": "max-cover", "dataset": dataset, **result, "growth": growth}))


def add_commands(commands) -> None:
    cover = commands.add_parser("max-cover", help="CP-SAT vs greedy on the real user cliques; solve time vs size")
    add_data_arguments(cover)
    cover.set_defaults(run=lambda args: max_cover(args.dataset, args.config, args.overrides))
