import math

import numpy as np
import pytest
import torch

from rec_core.data.splits import EvalSet, Sequences
from rec_core.eval.evaluator import evaluate, top_k, user_metrics


def csr(user_ids, lists):
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if lists else np.zeros(0, np.int64)
    return Sequences(np.asarray(user_ids, dtype=np.int64), offsets, flat)


def fixed_scores(matrix):
    matrix = torch.as_tensor(matrix, dtype=torch.float32)
    return lambda rows, histories, user_ids: matrix[torch.as_tensor(rows)]


def test_hand_computed_case():
    # 6 items. User 0: history {0}, targets {2, 5}. Scores rank (history excluded): 1, 2, 3, 4, 5.
    # Top-2 = [1, 2]: one hit at position 1 -> recall 1/2, ndcg = (1/log2 3) / (1 + 1/log2 3), hit 1.
    # User 1: history {4}, target {0}; scores rank 0 first -> recall 1, ndcg 1.
    scores = [[9.0, 8.0, 7.0, 6.0, 5.0, 4.0],
              [9.0, 1.0, 2.0, 3.0, 10.0, 0.5]]
    data = EvalSet(np.array([0, 1]), csr([0, 1], [[0], [4]]), csr([0, 1], [[2, 5], [0]]))
    metrics, ranking = evaluate(fixed_scores(scores), data, num_items=6, ks=[1, 2, 5], keep_top=3)
    user0_ndcg2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert metrics["recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["ndcg@2"] == pytest.approx((user0_ndcg2 + 1.0) / 2)
    assert metrics["hit_rate@1"] == pytest.approx(0.5)  # user 0's first is item 1, a miss
    # @5: user 0's list [1,2,3,4,5] holds both targets at positions 1 and 4
    user0_ndcg5 = (1 / math.log2(3) + 1 / math.log2(6)) / (1 + 1 / math.log2(3))
    assert metrics["ndcg@5"] == pytest.approx((user0_ndcg5 + 1.0) / 2)
    assert metrics["recall@5"] == pytest.approx(1.0)
    assert ranking.item_ids.tolist() == [[1, 2, 3], [0, 3, 2]]  # history never recommended


def test_ndcg_uses_ideal_dcg_not_number_of_hits():
    # one hit at position 2 of 3 targets: ComiRec's buggy NDCG would divide by DCG of 1 hit.
    scores = [[5.0, 4.0, 3.0, 2.0, 1.0]]
    data = EvalSet(np.array([0]), csr([0], [[4]]), csr([0], [[2, 3, 0]]))
    metrics, _ = evaluate(fixed_scores(scores), data, num_items=5, ks=[2])
    # top-2 (history 4 excluded) = [0, 1]: hit at position 0 only
    ideal = 1 + 1 / math.log2(3)
    assert metrics["ndcg@2"] == pytest.approx(1.0 / ideal)
    assert metrics["recall@2"] == pytest.approx(1 / 3)


def brute_force(scores, histories, targets, ks):
    out = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg", "hit_rate")}
    for row, (history, target) in enumerate(zip(histories, targets)):
        target = set(target) - set(history)
        if not target:
            continue
        ranked = [i for i in np.argsort(-scores[row], kind="stable") if i not in set(history)]
        for k in ks:
            top = ranked[:k]
            hits = [1.0 if item in target else 0.0 for item in top]
            dcg = sum(h / math.log2(p + 2) for p, h in enumerate(hits))
            idcg = sum(1 / math.log2(p + 2) for p in range(min(len(target), k)))
            out[f"recall@{k}"].append(sum(hits) / len(target))
            out[f"ndcg@{k}"].append(dcg / idcg)
            out[f"hit_rate@{k}"].append(float(sum(hits) > 0))
    return {key: float(np.mean(values)) for key, values in out.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, ks = 57, 80, [1, 5, 10, 20]
    scores = rng.normal(size=(n_users, n_items))
    histories = [rng.choice(n_items, size=rng.integers(1, 30), replace=False).tolist() for _ in range(n_users)]
    targets = [rng.choice(n_items, size=rng.integers(1, 12), replace=False).tolist() for _ in range(n_users)]
    data = EvalSet(np.arange(n_users), csr(range(n_users), histories), csr(range(n_users), targets))
    metrics, _ = evaluate(fixed_scores(scores), data, n_items, ks=ks, batch_size=16)  # several batches
    reference = brute_force(scores, histories, targets, ks)
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key


def test_rejects_wrong_score_shape():
    data = EvalSet(np.array([0]), csr([0], [[0]]), csr([0], [[1]]))
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda rows, h, u: torch.zeros(len(rows), 3), data, num_items=4, ks=[2])


def test_ties_rank_the_lower_item_id_first():
    # every item scores the same (as Popularity does for items with equal counts): the top-3 must be
    # the three lowest ids outside the history, in id order, whatever order topk would return
    n_items = 300
    data = EvalSet(np.array([0]), csr([0], [[0, 2]]), csr([0], [[4]]))
    metrics, ranking = evaluate(lambda rows, h, u: torch.ones(len(rows), n_items), data, n_items, ks=[3],
                                keep_top=3)
    assert ranking.item_ids.tolist() == [[1, 3, 4]]
    assert metrics["recall@3"] == 1.0 and metrics["ndcg@3"] == pytest.approx(1 / math.log2(4))


def test_user_metrics_are_the_per_user_figures_behind_the_means():
    rng = np.random.default_rng(5)
    n_users, n_items = 40, 60
    scores = rng.normal(size=(n_users, n_items))
    histories = [rng.choice(n_items, size=5, replace=False).tolist() for _ in range(n_users)]
    targets = [rng.choice(n_items, size=3, replace=False).tolist() for _ in range(n_users)]
    targets[7] = histories[7][:2]  # nothing retrievable: user 7 is not counted
    data = EvalSet(np.arange(n_users) + 100, csr(range(n_users), histories), csr(range(n_users), targets))
    metrics, _ = evaluate(fixed_scores(scores), data, n_items, ks=[5, 10], batch_size=16)
    frame = user_metrics(fixed_scores(scores), data, n_items, ks=[5, 10], batch_size=16)
    assert 107 not in set(frame["user_id"]) and frame["user_id"].nunique() == n_users - 1 == metrics["users"]
    for (metric, k), group in frame.groupby(["metric", "k"]):
        assert group["value"].mean() == pytest.approx(metrics[f"{metric}@{k}"], abs=1e-12)
    one = brute_force(scores[[3]], [histories[3]], [targets[3]], [5])
    row = frame[(frame["user_id"] == 103) & (frame["k"] == 5)].set_index("metric")["value"]
    assert row["recall"] == pytest.approx(one["recall@5"]) and row["ndcg"] == pytest.approx(one["ndcg@5"])


def test_top_k_ranks_every_user_as_the_evaluator_does_without_targets():
    rng = np.random.default_rng(9)
    n_users, n_items = 30, 40
    scores = np.round(rng.normal(size=(n_users, n_items)), 1)  # rounded: many ties
    histories = csr(np.arange(n_users) + 7, [rng.choice(n_items, size=4, replace=False).tolist()
                                             for _ in range(n_users)])
    targets = csr(np.arange(n_users) + 7, [[int(rng.integers(n_items))] for _ in range(n_users)])
    _, expected = evaluate(fixed_scores(scores), EvalSet(histories.user_ids, histories, targets), n_items, ks=[5],
                           keep_top=5, batch_size=8)
    ranking = top_k(fixed_scores(scores), histories, n_items, 5, batch_size=8)
    assert ranking.item_ids.tolist() == expected.item_ids.tolist()
    assert ranking.user_ids.tolist() == list(range(7, 37))
    for row in range(n_users):
        assert not set(ranking.item_ids[row]) & set(histories.sequence(row))
    assert ranking.scores.shape == (n_users, 5) and (np.diff(ranking.scores, axis=1) <= 0).all()


@pytest.mark.parametrize("kind", ["continuous", "integer counts", "history masked", "constant"])
def test_top_ranked_is_the_head_of_a_stable_descending_sort(kind):
    from rec_core.eval.evaluator import top_ranked

    generator = torch.Generator().manual_seed(len(kind))
    scores = torch.randn(300, 500, generator=generator)
    if kind == "integer counts":  # popularity-like: ties everywhere, also across the cut
        scores = torch.randint(0, 12, (300, 500), generator=generator).float()
    elif kind == "history masked":  # rows with fewer finite scores than the depth
        scores[:, 30:] = float("-inf")
        scores[::7, 5:] = float("-inf")
    elif kind == "constant":
        scores = torch.zeros(300, 500)
    for depth in (1, 20, 50):
        values, items = top_ranked(scores.clone(), depth)
        expected_values, expected_items = torch.sort(scores, dim=1, descending=True, stable=True)
        assert torch.equal(items, expected_items[:, :depth]) and torch.equal(values, expected_values[:, :depth])
