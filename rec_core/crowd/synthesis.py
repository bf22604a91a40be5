"""Synthesized users: one max-cover instance per user clique, solved in parallel as Ray tasks.

`build_instances` turns each clique into a rec_core.crowd.max_cover.Instance (candidates: each member's
most recent `member_items` items; elements and weights as documented there); `solve_instances`
deals the instances out to Ray tasks in chunks of `chunk_size`, each task solving its chunk with
CP-SAT (one search worker per instance by default: the parallelism is across instances), checks
every solution with the solver-independent `validate`, and returns them in instance order.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd

from rec_core.crowd.max_cover import Instance, MaxCoverSolver, Solution, SolverConfig, validate
from rec_core.data.splits import recent_items

log = logging.getLogger(__name__)


def item_label_sets(items: pd.DataFrame) -> dict[int, tuple[str, ...]]:
    """Labels per item; an item without labels is its own label, so it can still be covered."""
    return {int(i): tuple(labels) if len(labels) else (f"item:{int(i)}",)
            for i, labels in zip(items["item_id"], items["labels"])}


def population_label_shares(interactions: pd.DataFrame, labels: dict[int, tuple[str, ...]]) -> dict[str, float]:
    """Each label's share of the label occurrences of all interactions (counted per item, then per label)."""
    per_item = np.bincount(interactions["item_id"].to_numpy(np.int64))
    counts = Counter()
    for item in np.flatnonzero(per_item):
        for label in labels[int(item)]:
            counts[label] += int(per_item[item])
    total = sum(counts.values())
    return {label: count / total for label, count in counts.items()}


def build_instances(cliques: list[tuple[int, ...]], interactions: pd.DataFrame, labels: dict[int, tuple[str, ...]],
                    budget: int, member_items: int, population_weight: float,
                    weight_scale: int = 1000) -> list[Instance]:
    """interactions: user_id, item_id in time order (the training users')."""
    shares = population_label_shares(interactions, labels)
    members_of_any = np.unique(np.fromiter((m for members in cliques for m in members), dtype=np.int64))
    recent = recent_items(interactions, members_of_any, member_items)
    instances = []
    for instance_id, members in enumerate(cliques):
        engaged: dict[int, list[int]] = {}  # item -> members who engaged with it
        for member in members:
            for item in dict.fromkeys(recent[member]):
                engaged.setdefault(int(item), []).append(member)
        elements: dict[tuple, float] = {}
        for member in members:  # (member, label): the member's share of label occurrences
            counts = Counter(label for item in dict.fromkeys(recent[member]) for label in labels[int(item)])
            total = sum(counts.values())
            elements.update({(member, label): count / total for label, count in counts.items()})
        for label in sorted({label for item in engaged for label in labels[item]}):  # no hash order
            elements[("population", label)] = population_weight * shares.get(label, 0.0)
        index = {element: e for e, element in enumerate(elements)}
        candidates = sorted(engaged)
        covers = tuple(tuple(sorted({index[(m, l)] for m in engaged[i] for l in labels[i]}
                                    | {index[("population", l)] for l in labels[i]})) for i in candidates)
        weights = tuple(max(1, round(w * weight_scale)) if w > 0 else 0 for w in elements.values())
        instances.append(Instance(instance_id, tuple(members), tuple(candidates), covers, weights, budget))
    return instances


def solve_chunk(instances: list[Instance], config: SolverConfig) -> list[Solution]:
    solver = MaxCoverSolver(config)
    solutions = []
    for instance in instances:
        solution = solver.solve(instance)
        problems = validate(instance, solution)
        if problems:  # a solver bug must not reach the tables
            raise RuntimeError(f"invalid max-cover solution for instance {instance.instance_id}: {problems}")
        solutions.append(solution)
    return solutions


def solve_instances(instances: list[Instance], config: SolverConfig, chunk_size: int = 32) -> list[Solution]:
    """Solve every instance in Ray tasks (one CPU each, `chunk_size` instances per task)."""
    import ray

    remote = ray.remote(num_cpus=1)(solve_chunk)
    chunks = [instances[start:start + chunk_size] for start in range(0, len(instances), chunk_size)]
    pending = {remote.remote(chunk, config): n for n, chunk in enumerate(chunks)}
    results: dict[int, list[Solution]] = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        results[pending.pop(done[0])] = ray.get(done[0])
        if len(results) % max(1, len(chunks) // 10) == 0 or not pending:
            log.info("max-cover: %d/%d chunks solved", len(results), len(chunks))
    return [solution for n in range(len(chunks)) for solution in results[n]]


def synthesized_users_table(instances: list[Instance], solutions: list[Solution]) -> pd.DataFrame:
    """One row per synthesized user. Solve times are not in it (the stage's manifest entry has them),
    so the same config gives a byte-identical table in every process."""
    return pd.DataFrame({
        "synth_id": [s.instance_id for s in solutions],
        "member_ids": [list(i.members) for i in instances],
        "item_ids": [s.items(i) for i, s in zip(instances, solutions)],
        "objective": [s.objective for s in solutions],
        "greedy_objective": [s.greedy_objective for s in solutions],
        "bound": [s.bound for s in solutions],
        "status": [s.status for s in solutions],
        "notes": ["; ".join(s.notes) for s in solutions],
    })
