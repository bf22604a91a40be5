"""Stage: user cliques -> CP-SAT max-cover synthesized users -> table `synthesized_users`.

1. Cliques of mutually similar training users (rec_core.crowd.cliques, settings in `crowd`),
   found in a Ray task (`find_cliques`: the driver keeps only the result).
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

from jobs.ray_runtime import init_ray
from rec_core.crowd.cliques import UserCliques
from rec_core.crowd.max_cover import SolverConfig
from rec_core.crowd.synthesis import build_instances, item_label_sets, solve_instances, synthesized_users_table
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run
from rec_core.run.incremental import kept_synthesized_users, previous_root

log = logging.getLogger(__name__)


def training_interactions(run: Run) -> pd.DataFrame:
    """user_id, item_id of the training users' interactions, in time order (ingest sorted them; the
    timestamps themselves are not read)."""
    splits = run.read_table("user_splits", columns=["user_id", "split"])
    train_users = splits.loc[splits["split"] == "train", "user_id"].to_numpy(np.int64)
    interactions = run.read_table("interactions", columns=["user_id", "item_id"])
    user_ids, item_ids = interactions["user_id"].to_numpy(np.int64), interactions["item_id"].to_numpy(np.int64)
    del interactions
    chosen = np.isin(user_ids, train_users)
    return pd.DataFrame({"user_id": user_ids[chosen], "item_id": item_ids[chosen]})  # no index to carry


def user_cliques(crowd: dict) -> UserCliques:
    """The clique model with the `crowd` settings (unfitted)."""
    return UserCliques(crowd["neighbours"], crowd["min_similarity"], crowd["min_shared_items"],
                       crowd["max_item_users"], crowd["min_size"], crowd["max_size"])


def fit_cliques(crowd: dict, interactions: pd.DataFrame, taken: set[int]) -> UserCliques:
    return user_cliques(crowd).fit(interactions, taken=taken)


def find_cliques(crowd: dict, interactions: pd.DataFrame, taken: set[int], ray_settings: dict) -> UserCliques:
    """The fitted cliques, found in one Ray task: the similarity products and the clique search are
    the stage's largest memory (~1 GiB at 800k training users: sparse products, a set per user),
    which the driver, alive for the whole refresh, should not hold. The task returns the cliques,
    the edges and the statistics only. It is one sequential search, as before (the graph's
    components could be searched side by side; not done)."""
    import ray

    init_ray(ray_settings)
    cliques = ray.get(ray.remote(num_cpus=1)(fit_cliques).remote(crowd, interactions, taken))
    log.info("user cliques: %s", cliques.stats_)
    return cliques


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
        cliques = find_cliques(crowd, interactions, taken, run.config["ray"])  # new cliques among the others only
        if not cliques.cliques_ and not len(kept):
            raise ValueError(f"no user cliques of {crowd['min_size']}+ users: lower crowd.min_size, "
                             "crowd.min_similarity or crowd.min_shared_items")
        instances = crowd_instances(cliques.cliques_, interactions, item_label_sets(run.read_table("items")), crowd)
        solutions = []
        if instances:
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
