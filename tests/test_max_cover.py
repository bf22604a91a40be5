"""CP-SAT max-cover: optimal on small instances, never below greedy, validated, bounded in time."""

from itertools import combinations

import numpy as np
import pytest

from rec_core.crowd.max_cover import (FEASIBLE, GREEDY_FALLBACK, OPTIMAL, Instance, MaxCoverSolver, Solution,
                                SolverConfig, greedy, validate)


def random_instance(seed: int, n_items: int, n_elements: int, budget: int, density: float = 0.25) -> Instance:
    rng = np.random.default_rng(seed)
    covers = tuple(tuple(np.flatnonzero(rng.random(n_elements) < density).tolist()) for _ in range(n_items))
    weights = tuple(rng.integers(1, 100, n_elements).tolist())
    return Instance(seed, (1, 2, 3), tuple(range(100, 100 + n_items)), covers, weights, budget)


def brute_force(instance: Instance) -> int:
    return max(instance.covered_weight(chosen) for size in range(instance.budget + 1)
               for chosen in combinations(range(len(instance.items)), size))


@pytest.mark.parametrize("seed", range(12))
def test_cp_sat_finds_the_brute_force_optimum_and_beats_or_ties_greedy(seed):
    rng = np.random.default_rng(100 + seed)
    instance = random_instance(seed, int(rng.integers(4, 11)), int(rng.integers(3, 15)), int(rng.integers(1, 4)))
    solution = MaxCoverSolver(SolverConfig(deterministic_time=10)).solve(instance)
    assert validate(instance, solution) == []
    assert solution.status == OPTIMAL
    assert solution.objective == brute_force(instance) == solution.bound
    assert solution.objective >= instance.covered_weight(greedy(instance)) == solution.greedy_objective


def test_greedy_is_a_valid_cover_within_budget():
    instance = random_instance(7, 30, 40, 5)
    chosen = greedy(instance)
    assert len(chosen) <= 5 and len(set(chosen)) == len(chosen)
    greedy_only = MaxCoverSolver(SolverConfig(use_cp_sat=False)).solve(instance)
    assert greedy_only.status == "greedy" and greedy_only.chosen == chosen and validate(instance, greedy_only) == []


def test_validity_check_rejects_corrupted_solutions():
    instance = random_instance(3, 8, 10, 3)
    good = MaxCoverSolver().solve(instance)
    assert validate(instance, good) == []

    def corrupted(**change):
        return Solution(**{**good.__dict__, **change})

    assert validate(instance, corrupted(chosen=good.chosen + [99]))  # not a candidate
    over_budget = [p for p in range(len(instance.items))][:4]
    assert validate(instance, corrupted(chosen=over_budget, objective=instance.covered_weight(over_budget)))
    assert validate(instance, corrupted(chosen=[good.chosen[0], good.chosen[0]],
                                        objective=instance.covered_weight([good.chosen[0]])))  # duplicate
    assert validate(instance, corrupted(objective=good.objective + 1))  # objective it does not cover
    assert validate(instance, corrupted(bound=good.objective - 1))  # a bound below the objective
    assert validate(instance, corrupted(instance_id=instance.instance_id + 1))


def test_too_short_time_limit_still_returns_a_valid_greedy_or_better_solution():
    instance = random_instance(11, 400, 300, 20, density=0.05)
    solution = MaxCoverSolver(SolverConfig(deterministic_time=0.0001)).solve(instance)
    assert validate(instance, solution) == []
    assert solution.objective >= solution.greedy_objective == instance.covered_weight(greedy(instance))
    assert solution.status in (FEASIBLE, GREEDY_FALLBACK)  # no time to prove optimality
    if solution.status == FEASIBLE:
        assert solution.bound >= solution.objective
    else:
        # the bound CP-SAT proved before it stopped is kept, never worse than the trivial one
        assert solution.notes and solution.objective <= solution.bound <= sum(instance.weights)


def test_a_limited_search_is_reproducible():
    """The deterministic time limit stops the search at the same point whatever the machine load."""
    instance = random_instance(12, 300, 250, 25, density=0.05)
    config = SolverConfig(deterministic_time=0.05)
    first, second = (MaxCoverSolver(config).solve(instance) for _ in range(2))
    assert first.status != "optimal"  # the limit really cut the search
    assert (first.chosen, first.objective, first.bound, first.status) == \
        (second.chosen, second.objective, second.bound, second.status)


def test_bad_instances_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="budget"):
        Instance(0, (1,), (5,), ((0,),), (1,), 0)
    with pytest.raises(ValueError, match="duplicate"):
        Instance(0, (1,), (5, 5), ((0,), (0,)), (1,), 1)
    with pytest.raises(ValueError, match="out of range"):
        Instance(0, (1,), (5,), ((3,),), (1,), 1)
