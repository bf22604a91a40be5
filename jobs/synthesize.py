"""Stage: user cliques -> CP-SAT max-cover synthesized users -> table `synthesized_users`.

1. Cliques of mutually similar training users (rec_core.crowd.cliques, settings in `crowd`).
2. One budgeted max-cover instance per clique (rec_core.crowd.max_cover: which items, at most
   `crowd.budget`, cover the members' and the population's behaviours best).
3. The instances are solved by CP-SAT in parallel Ray tasks, greedy as hint and fallback; every
   solution passes the solver-independent validity check before it is written.

On an incremental night (rec_core.run.incremental) the previous run's synthesized users whose
cliques hold only unchanged training users are kept (numbered first, in their previous order); the
similarity graph is built over every training user as in a full run, and new cliques are selected
and solved among the users outside the kept cliques only.

Table columns: synth_id, member_ids, item_ids (the synthesized user's history), objective,
greedy_objective, bound (proven upper bound), status (optimal / feasible / greedy_fallback),
notes. The manifest records the clique statistics, the status counts, the mean
gap to the bound and the solve times.

    python -m jobs.synthesize run_id=<an ingested run>
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd

from jobs.train import init_ray
from rec_core.crowd.cliques import UserCliques
from rec_core.crowd.max_cover import SolverConfig
from rec_core.crowd.synthesis import build_instances, item_label_sets, solve_instances, synthesized_users_table
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run
from rec_core.run.incremental import kept_synthesized_users, previous_root

log = logging.getLogger(__name__)


def training_interactions(run: Run):
    splits = run.read_table("user_splits")
    train_users = splits.loc[splits["split"] == "train", "user_id"]
    interactions = run.read_table("interactions")
    return interactions[interactions["user_id"].isin(train_users)]


def user_cliques(crowd: dict) -> UserCliques:
    """The clique model with the `crowd` settings (unfitted)."""
    return UserCliques(crowd["neighbours"], crowd["min_similarity"], crowd["min_shared_items"],
                       crowd["max_item_users"], crowd["min_size"], crowd["max_size"])


def crowd_instances(groups, interactions, labels, crowd: dict):
    """One max-cover instance per group of users, with the `crowd` budget and weights."""
    return build_instances(groups, interactions, labels, crowd["budget"], crowd["member_items"],
                           crowd["population_weight"])


def solver_config(config: dict) -> SolverConfig:
    return SolverConfig(config["crowd"]["deterministic_time"], config["crowd"]["solver_workers"], config["seed"])


def synthesize(run: Run):
    crowd = run.config["crowd"]
    with run.stage("synthesize") as info:
        interactions = training_interactions(run)
        previous = previous_root(run)
        kept, dropped = kept_synthesized_users(previous, run) if previous else (pd.DataFrame(), 0)
        taken = {int(user) for members in kept.get("member_ids", []) for user in members}
        cliques = user_cliques(crowd).fit(interactions, taken=taken)  # new cliques among the others only
        if not cliques.cliques_ and not len(kept):
            raise ValueError(f"no user cliques of {crowd['min_size']}+ users: lower crowd.min_size, "
                             "crowd.min_similarity or crowd.min_shared_items")
        instances = crowd_instances(cliques.cliques_, interactions, item_label_sets(run.read_table("items")), crowd)
        solutions = []
        if instances:
            init_ray()
            solutions = solve_instances(instances, solver_config(run.config), crowd["chunk_size"])
        table = pd.concat([kept, synthesized_users_table(instances, solutions)], ignore_index=True)
        table["synth_id"] = np.arange(len(table), dtype=np.int64)  # the kept ones first, in their previous order
        info["rows"] = {"synthesized_users": run.write_table("synthesized_users", table)}
        info["cliques"] = {**cliques.stats_, "kept_from_previous_run": len(kept), "previous_dropped": dropped,
                           "users_in_kept_cliques": len(taken)}
        info["solutions"] = dict(Counter(table["status"]))
        gap = (table["bound"] - table["objective"]) / table["bound"].clip(lower=1)
        info["mean_gap_to_bound"] = round(float(gap.mean()), 5)
        info["objective_over_greedy"] = round(float(table["objective"].sum() / table["greedy_objective"].sum()), 5)
        seconds = np.array([solution.solve_seconds for solution in solutions] or [0.0])
        info["solve_seconds"] = {"solved": len(solutions), "mean": round(float(seconds.mean()), 4),
                                 "max": round(float(seconds.max()), 4)}
        info["items_per_synthesized_user"] = round(float(np.mean(table["item_ids"].map(len))), 2)
        log.info("synthesize: %d synthesized users, status %s, objective / greedy %.4f, mean gap %.4f",
                 len(table), info["solutions"], info["objective_over_greedy"], info["mean_gap_to_bound"])
    return table


def main(argv=None) -> None:
    main_guard(lambda config: synthesize(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
