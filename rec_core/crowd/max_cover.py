"""Budgeted weighted max-cover: the behaviours of one synthesized user (arXiv 2507.10917).

A synthesized user stands for a clique of similar users. Its history is a few items (a budget
that fits an LLM prompt) chosen from the members' items so that they cover what the members do.

Formulation (one Instance per clique):

- candidates: the members' items, item i with the members who engaged with it and its labels
  (genres / categories);
- elements to cover, with weights:
  * (member u, label l) for every label of u's candidate items (its `member_items` most recent,
    distinct), weight share_u(l) = the number of those items carrying l over the total number of
    labels they carry (an item with two labels counts once for each): every member counts equally
    (its weights sum to 1), and within a member a label counts as much as the member's behaviour
    does; an item covers (u, l) when u engaged with it and
    it carries l, so a chosen item shared by several members covers all of them at once
    (compactness: few items, each a behaviour the clique has in common);
  * (population, label l), weight `population_weight` * the population's share of interactions
    with label l: among items the members engaged with equally, prefer those whose labels matter
    in the whole data set (representativeness beyond the clique);
- at most `budget` items; maximise the covered weight.

Integer program (CP-SAT): x_i, y_e in {0, 1}; y_e <= sum of x_i over the items covering e;
sum x_i <= budget; maximise sum w_e y_e, weights scaled to integers (`weight_scale`). The greedy
algorithm (take the item of largest marginal covered weight, `budget` times) is a (1 - 1/e)
approximation; it is the solver's complete hint and the fallback when CP-SAT finds nothing.

`validate` checks a Solution against its Instance without any solver: items are candidates,
distinct, within budget, and the objective equals the weight the items really cover.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

OPTIMAL, FEASIBLE, GREEDY_FALLBACK = "optimal", "feasible", "greedy_fallback"


@dataclass(frozen=True)
class Instance:
    """One clique: `items[i]` covers the elements `covers[i]` (indices into `weights`)."""
    instance_id: int
    members: tuple[int, ...]
    items: tuple[int, ...]
    covers: tuple[tuple[int, ...], ...]
    weights: tuple[int, ...]  # integer element weights (already scaled)
    budget: int

    def __post_init__(self):
        if len(self.items) != len(self.covers):
            raise ValueError(f"instance {self.instance_id}: {len(self.items)} items but {len(self.covers)} cover lists")
        if len(set(self.items)) != len(self.items):
            raise ValueError(f"instance {self.instance_id}: duplicate candidate items")
        if self.budget < 1:
            raise ValueError(f"instance {self.instance_id}: budget must be >= 1, got {self.budget}")
        bad = [e for cover in self.covers for e in cover if not 0 <= e < len(self.weights)]
        if bad:
            raise ValueError(f"instance {self.instance_id}: element index {bad[0]} out of range")

    def covered_weight(self, chosen: list[int] | tuple[int, ...]) -> int:
        """Total weight of the elements covered by the chosen candidate positions."""
        covered = {e for position in chosen for e in self.covers[position]}
        return int(sum(self.weights[e] for e in covered))


@dataclass(frozen=True)
class SolverConfig:
    # CP-SAT's deterministic time limit per instance (its own work units, about seconds on a quiet
    # machine). Unlike a wall-clock limit it does not depend on machine load, so with one search
    # worker a rerun finds the same solutions; with several workers CP-SAT is not reproducible.
    deterministic_time: float = 2.0
    num_workers: int = 1  # CP-SAT search workers per instance (instances already run in parallel)
    seed: int = 0
    use_cp_sat: bool = True  # False: greedy only (the baseline in the benchmark)


@dataclass
class Solution:
    instance_id: int
    chosen: list[int]  # positions into Instance.items
    objective: int
    bound: float  # proven upper bound on the optimum (the objective itself when optimal)
    status: str  # optimal / feasible / greedy_fallback / greedy
    solve_seconds: float
    greedy_objective: int = 0
    notes: list[str] = field(default_factory=list)

    def items(self, instance: Instance) -> list[int]:
        return [instance.items[position] for position in self.chosen]


def validate(instance: Instance, solution: Solution) -> list[str]:
    """What is wrong with `solution` for `instance` (empty list = valid)."""
    problems = []
    if solution.instance_id != instance.instance_id:
        problems.append(f"solution is for instance {solution.instance_id}, not {instance.instance_id}")
    if any(not 0 <= p < len(instance.items) for p in solution.chosen):
        problems.append("a chosen position is not a candidate item")
        return problems
    if len(set(solution.chosen)) != len(solution.chosen):
        problems.append("an item is chosen twice")
    if len(solution.chosen) > instance.budget:
        problems.append(f"{len(solution.chosen)} items chosen, budget {instance.budget}")
    actual = instance.covered_weight(solution.chosen)
    if actual != solution.objective:
        problems.append(f"objective {solution.objective} but the chosen items cover {actual}")
    if solution.bound + 1e-6 < solution.objective:
        problems.append(f"bound {solution.bound} below objective {solution.objective}")
    return problems


def greedy(instance: Instance) -> list[int]:
    """Largest marginal covered weight first (ties: lowest position), until the budget or no gain."""
    weights = np.asarray(instance.weights, dtype=np.int64)
    covered = np.zeros(len(weights), dtype=bool)
    chosen: list[int] = []
    covers = [np.asarray(c, dtype=np.int64) for c in instance.covers]
    for _ in range(min(instance.budget, len(covers))):
        gains = [int(weights[c[~covered[c]]].sum()) if p not in chosen else -1 for p, c in enumerate(covers)]
        best = int(np.argmax(gains))
        if gains[best] <= 0:
            break
        chosen.append(best)
        covered[covers[best]] = True
    return chosen


class MaxCoverSolver:
    """CP-SAT on the integer program above, greedy as complete hint and fallback."""

    def __init__(self, config: SolverConfig = SolverConfig()):
        self.config = config

    def solve(self, instance: Instance) -> Solution:
        began = time.perf_counter()
        hint = greedy(instance)
        greedy_value = instance.covered_weight(hint)
        upper = float(sum(instance.weights))
        if not self.config.use_cp_sat:
            return Solution(instance.instance_id, hint, greedy_value, upper, "greedy",
                            time.perf_counter() - began, greedy_value)
        from ortools.sat.python import cp_model

        model = cp_model.CpModel()
        x = [model.new_bool_var(f"x{p}") for p in range(len(instance.items))]
        y = [model.new_bool_var(f"y{e}") for e in range(len(instance.weights))]
        covering: list[list[int]] = [[] for _ in instance.weights]
        for position, cover in enumerate(instance.covers):
            for element in cover:
                covering[element].append(position)
        for element, positions in enumerate(covering):
            model.add(y[element] <= sum(x[p] for p in positions))
        model.add(sum(x) <= instance.budget)
        model.maximize(sum(w * y[e] for e, w in enumerate(instance.weights)))
        chosen_hint = set(hint)
        covered_hint = {e for p in hint for e in instance.covers[p]}
        for position, var in enumerate(x):
            model.add_hint(var, position in chosen_hint)
        for element, var in enumerate(y):
            model.add_hint(var, element in covered_hint)

        solver = cp_model.CpSolver()
        solver.parameters.max_deterministic_time = self.config.deterministic_time
        solver.parameters.num_workers = self.config.num_workers
        solver.parameters.random_seed = self.config.seed
        status = solver.solve(model)
        seconds = time.perf_counter() - began
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            chosen = [p for p, var in enumerate(x) if solver.value(var)]
            value = instance.covered_weight(chosen)  # y may under-report: recount what x covers
            if value >= greedy_value:
                return Solution(instance.instance_id, chosen, value,
                                float(value if status == cp_model.OPTIMAL else solver.best_objective_bound),
                                OPTIMAL if status == cp_model.OPTIMAL else FEASIBLE, seconds, greedy_value)
            note = f"cp-sat returned {value} below greedy {greedy_value}"
        elif status == cp_model.INFEASIBLE:
            note = "cp-sat: infeasible (cannot happen for a valid instance: x = 0 is feasible)"
        elif status == cp_model.MODEL_INVALID:
            note = f"cp-sat: model invalid: {model.validate()}"
        else:  # UNKNOWN: the time limit ran out before any solution (the hint was not accepted)
            note = (f"cp-sat: {solver.status_name(status).lower()} after {self.config.deterministic_time} "
                    "deterministic time units")
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.UNKNOWN):
            upper = min(upper, float(solver.best_objective_bound))  # the bound CP-SAT proved still holds
        return Solution(instance.instance_id, hint, greedy_value, max(upper, greedy_value), GREEDY_FALLBACK, seconds,
                        greedy_value, [note])
