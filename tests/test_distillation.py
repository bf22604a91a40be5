"""ALKDRec's parts: the active selection (its closed-form max-min policy against a numeric LP solve
with OR-Tools), the teacher backends' validation and re-ranking, the 3/2/1 rank-band loss, the
distilled-model names and config, and the fine-tuning recipe."""

import json

import numpy as np
import pytest
import torch

from rec_core.models.names import parse_model_name
from rec_core.run.config import ConfigError, load_config
from rec_core.session.distillation import DistillationObjective, band_weights, ranked_list_loss
from rec_core.session.models import build_session_model
from rec_core.session.protocol import session_protocol
from rec_core.session.selection import (Outcomes, binary_outcomes, log_effective_gains, maxmin_policy,
                                        select_sessions, session_difficulty, ternary_outcomes)
from rec_core.session.teachers import (FAILED, OK, REPAIRED, hints_prompt, list_quality, prompt_char_budget, read_hints,
                                       ranking_schema, text_rerank, validate_ranking, with_targets)
from rec_core.train.distill_recipe import DistillTraining
from rec_core.data.splits import split_sessions
from tests.test_session import SESSION, TRAIN, chain_sessions


def lp_maxmin(gains: np.ndarray, outcomes: Outcomes) -> float:
    """max_p min_assignment sum_s p_s c_o(s) g_s as an LP (the inner minimum by its dual):
    max sum_s u_s + sum_o k_o v_o  s.t.  u_s + v_o <= c_o g_s p_s,  sum p = 1,  p >= 0."""
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver("GLOP")
    counts = outcomes.counts(len(gains))
    p = [solver.NumVar(0, 1, f"p{s}") for s in range(len(gains))]
    u = [solver.NumVar(-solver.infinity(), solver.infinity(), f"u{s}") for s in range(len(gains))]
    v = [solver.NumVar(-solver.infinity(), solver.infinity(), f"v{o}") for o in range(len(counts))]
    solver.Add(sum(p) == 1)
    for s, gain in enumerate(gains):
        for o, coefficient in enumerate(outcomes.coefficients):
            solver.Add(u[s] + v[o] <= coefficient * gain * p[s])
    solver.Maximize(sum(u) + sum(int(k) * v[o] for o, k in enumerate(counts)))
    assert solver.Solve() == pywraplp.Solver.OPTIMAL
    return solver.Objective().Value()


def adversary_value(p: np.ndarray, gains: np.ndarray, outcomes: Outcomes) -> float:
    """The worst outcome assignment's expected gain, by brute force over the rearrangement."""
    counts = outcomes.counts(len(gains))
    bands = np.repeat(np.sort(outcomes.coefficients), counts[np.argsort(outcomes.coefficients)])
    return float(np.sort(p * gains)[::-1] @ bands)


@pytest.mark.parametrize("instance", range(60))
def test_closed_form_policy_matches_the_lp_optimum(instance):
    rng = np.random.default_rng(instance)
    n = int(rng.integers(1, 13))
    difficulty = rng.normal(size=n)
    outcomes = [ternary_outcomes(), binary_outcomes(),
                ternary_outcomes(tuple(rng.integers(0, 6, 3) + np.array([1, 0, 0])), rng.random(), rng.random() * 2)
                ][instance % 3]
    mu = [10.0, 1.0, 0.5][instance % 3 if instance % 2 else 0]
    log_gains = log_effective_gains(difficulty, mu)
    p, value = maxmin_policy(log_gains, outcomes)
    gains = np.exp(log_gains)
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
    assert adversary_value(p, gains, outcomes) == pytest.approx(value, rel=1e-9, abs=1e-15)
    assert value == pytest.approx(lp_maxmin(gains, outcomes), rel=1e-6, abs=1e-12)


def test_gains_rank_the_hardest_first_and_counts_follow_the_ratio():
    difficulty = np.array([0.1, 0.9, 0.5])
    assert np.exp(log_effective_gains(difficulty, 2.0)).tolist() == pytest.approx([1 / 9, 1.0, 1 / 4])
    assert ternary_outcomes().counts(10).tolist() == [1, 5, 4]
    assert ternary_outcomes().counts(7).sum() == 7
    assert binary_outcomes().counts(10).tolist() == [6, 4]


def test_difficulty_is_minus_the_mean_sigmoid_of_the_sessions_own_items():
    sessions = np.array([[1.0, 0.0], [0.0, 2.0]])
    items = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    offsets, flat = np.array([0, 2, 3]), np.array([0, 2, 1])
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    expected = [-(sigmoid(1.0) + sigmoid(2.0)) / 2, -sigmoid(2.0)]
    assert session_difficulty(sessions, items, offsets, flat) == pytest.approx(expected)
    with pytest.raises(ValueError, match="no items"):
        session_difficulty(sessions, items, np.array([0, 0, 3]), flat)


def test_policies_draw_distinct_sessions_reproducibly():
    difficulty = np.random.default_rng(0).normal(size=400)
    for policy in ("alkdrec", "binary", "random", "easiest", "hardest"):
        rows, probabilities = select_sessions(policy, difficulty, 50, seed=3)
        assert len(set(rows.tolist())) == 50 and len(probabilities) == 50
        assert np.array_equal(rows, select_sessions(policy, difficulty, 50, seed=3)[0])
    hardest = select_sessions("hardest", difficulty, 5, 0)[0]
    assert hardest.tolist() == np.argsort(-difficulty)[:5].tolist()
    assert select_sessions("easiest", difficulty, 5, 0)[0].tolist() == np.argsort(difficulty)[:5].tolist()
    # ALKDRec's policy leaves out both ends: not the hardest half, not the easiest tenth
    chosen = select_sessions("alkdrec", difficulty, 50, 0)[0]
    ranks = np.argsort(np.argsort(-difficulty))[chosen]
    assert ranks.min() > 0.5 * len(difficulty) and ranks.max() < 0.95 * len(difficulty)
    assert len(select_sessions("random", difficulty[:10], 50, 0)[0]) == 10
    with pytest.raises(ValueError, match="unknown selection policy"):
        select_sessions("best", difficulty, 5, 0)


def test_policy_support_is_inside_the_pool_and_skips_the_hardest_sessions():
    difficulty = np.linspace(1, 0, 1000)  # row 0 the hardest
    p, value = maxmin_policy(log_effective_gains(difficulty, 10.0), ternary_outcomes())
    support = np.flatnonzero(p > 0)
    assert value > 0 and support.min() == 0 and 800 <= support.max() < 1000
    assert p[: support.max() // 2].sum() < 1e-2  # mass ~ rank^10: on the sessions just inside the cut


def test_ranking_validation_repairs_from_the_teachers_order_and_counts():
    candidates = np.array([10, 11, 12, 13, 14, 15])
    assert validate_ranking(json.dumps({"ranked_ids": [12, 10, 11]}), candidates, 3) == ([12, 10, 11], OK, "")
    ranked, status, detail = validate_ranking(json.dumps({"ranked_ids": [12, 99, 12, True, 14]}), candidates, 4)
    assert ranked == [12, 14, 10, 11] and status == REPAIRED
    assert detail == "2 unknown, 1 repeated, 2 filled from the teacher's order"
    for broken in ("not json", json.dumps({"ids": [1]}), json.dumps({"ranked_ids": 3})):
        assert validate_ranking(broken, candidates, 3)[:2] == ([], FAILED)
    schema = json.loads(ranking_schema(candidates, 3))["properties"]["ranked_ids"]
    assert schema["items"]["enum"] == candidates.tolist() and schema["minItems"] == schema["maxItems"] == 3


def test_with_targets_puts_a_missed_target_last_and_leaves_hits_alone():
    candidates = np.array([[5, 6, 7], [8, 9, 10]])
    changed, added = with_targets(candidates, np.array([6, 4]))
    assert changed.tolist() == [[5, 6, 7], [8, 9, 4]] and added == 1
    assert candidates.tolist() == [[5, 6, 7], [8, 9, 10]]  # the input is not changed


def test_text_rerank_blends_teacher_order_and_similarity():
    items = np.eye(4)
    candidates = np.array([[0, 1, 2]])
    scores = np.array([[3.0, 2.0, 1.0]])
    session = np.array([[0.0, 0.0, 1.0, 0.0]])  # the text points at item 2, the teacher at item 0
    assert text_rerank(candidates, scores, session, items, 0.0, 3).tolist() == [[0, 1, 2]]
    assert text_rerank(candidates, scores, session, items, 1.0, 1).tolist() == [[2]]
    assert list_quality([[1, 2, 3], [4, 5, 6]], np.array([3, 9]), cutoffs=(1, 3)) == {
        "target_in_top1": 0.0, "target_in_top3": 0.5}


def test_band_loss_weights_3_2_1_and_masks_listed_negatives():
    assert band_weights(25).tolist() == [3.0] * 5 + [2.0] * 10 + [1.0] * 10
    embedding = torch.nn.Embedding(6, 2)
    with torch.no_grad():
        embedding.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [0.5, 0.5], [-1.0, 0], [0, -1.0], [0, 0]]))
    session = torch.tensor([[1.0, 0.0]])
    ranked = torch.tensor([[0, 1]])
    loss = ranked_list_loss(session, embedding, ranked, torch.tensor([3, 1]))  # 1 is listed: masked
    expected = (3 * torch.nn.functional.softplus(torch.tensor(-1.0 - 1.0))
                + 3 * torch.nn.functional.softplus(torch.tensor(-1.0 - 0.0))) / 6
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_distilled_names_and_config():
    spec = parse_model_name("fpmc+student+distill.250.llm.random")
    assert spec.distilled and spec.student and spec.teacher == "fpmc" and spec.student_name == "fpmc+student"
    assert dict(spec.distill_options) == {"budget": 250, "teacher": "llm", "selection": "random"}
    for bad in ("fpmc+distill", "fpmc+student+distill.x", "fpmc+student+distill.llm.encoder", "sasrec+student"):
        with pytest.raises(ValueError):
            parse_model_name(bad)
    with pytest.raises(ConfigError, match="add fpmc to models"):
        load_config(None, ["models=[fpmc+student,fpmc+student+distill]"])
    with pytest.raises(ConfigError, match="list_length"):
        load_config(None, ["distill.list_length=60"])


def test_fine_tuning_moves_the_student_toward_the_lists_and_keeps_the_student_as_candidate():
    sessions, n_items = chain_sessions(n_sessions=300)
    splits = split_sessions(sessions, seed=0, max_prefix=3)
    data = session_protocol(sessions, splits, n_items)
    config = {**TRAIN, "epochs": 3, "patience": 3, "batch_size": 16, "learning_rate": 0.05}
    student = build_session_model("fpmc+student", n_items, {**config, "max_history": 3}, SESSION)
    prefixes = [np.array([5, 6, 7]), np.array([20, 21, 22])]
    ranked = np.array([[8, 9, 10], [23, 24, 25]])
    recipe = DistillTraining("fpmc+student+distill", config, data, 0, SESSION, 3, student.state_dict(), prefixes,
                             ranked)
    recipe.setup()
    before = recipe.best_metric_
    assert torch.equal(recipe.model_.item_embedding.weight, student.item_embedding.weight)
    losses = [recipe.run_epoch()["loss"] for _ in range(3)]
    assert losses[-1] < losses[0]
    assert isinstance(recipe.objective(), DistillationObjective)
    recipe.train()
    assert recipe.best_metric_ >= before
    with pytest.raises(ValueError, match="no distilled session"):
        DistillTraining("fpmc+student+distill", config, data, 0, SESSION, 3, student.state_dict(), [], ranked[:0])


LONG_HINTS = " ".join("".join(chr(97 + i // 26 ** place % 26) for place in range(3)) for i in range(300))


@pytest.mark.parametrize("output, hints, dropped", [
    ('{"hints": "It follows the  genre and era of the session."}', "It follows the genre and era of the session.", ""),
    ('{"hints": "' + LONG_HINTS + '"}', LONG_HINTS[:600], ""),  # 1,199 characters of 300 distinct words, cut
    ("no json", "", "not JSON"),
    ('{"hints": 3}', "", "no hints string"),
    ('{"hints": "  "}', "", "empty"),
    ('{"hints": "1, 2, 3; 4 ... 5"}', "", "not text"),
    ('{"hints": "The Golden Compass; ' + "The Shining; " * 20 + '"}', "", "repeated"),  # SmolLM2's answer on HetRec
])
def test_hints_that_are_not_prose_are_dropped_with_the_reason(output, hints, dropped):
    got, reason = read_hints(output, max_chars=600)
    assert (got, reason.split(" (")[0]) == ("" if dropped else hints, dropped)


def test_hints_prompt_holds_as_many_cases_as_fit_the_context():
    cases = [(["Toy Story (1995)"] * 10, ["Heat (1995)"] * 20)] * 20
    budget = prompt_char_budget(2048, 256, "x" * 300)
    text, shown = hints_prompt(cases, budget)
    assert len(text) <= budget and 1 <= shown < 20 and text.count("Case ") == shown
    assert hints_prompt(cases, 10**6)[1] == 20
