"""The one evaluator: full ranking over all items, history excluded, batched in torch.

For a user with target set T (unique items) and the top-K list R (history items never appear):

    Recall@K  = |R ∩ T| / |T|
    NDCG@K    = sum_{r in R, r in T} 1 / log2(pos(r) + 2)  /  sum_{i < min(|T|, K)} 1 / log2(i + 2)
    HitRate@K = 1 if |R ∩ T| > 0 else 0

and each metric is the mean over users. Positions are 0-based ranks in R (not a set order, and
NDCG is normalised by the ideal DCG, not by the number of hits: the two bugs of the papers' code).
A target that is also in the history cannot be retrieved and is left out of T; a user left with
no target is not counted (the `users` figure says how many were). Equal scores rank the lower
item id first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from rec_core.data.splits import EvalSet, Sequences

ScoreFn = Callable[[np.ndarray, Sequences, np.ndarray], torch.Tensor]
"""score_fn(rows, histories, user_ids) -> [len(rows), num_items] scores for users histories[rows]."""


@dataclass
class Ranking:
    """Top-K per evaluated user (user order of the EvalSet)."""

    user_ids: np.ndarray
    item_ids: np.ndarray  # [U, K]
    scores: np.ndarray  # [U, K]

    def rows(self) -> pd.DataFrame:
        """One row per user and place: user_id, rank (1 = best), item_id, score."""
        users, depth = self.item_ids.shape
        return pd.DataFrame({"user_id": np.repeat(self.user_ids, depth), "rank": np.tile(np.arange(1, depth + 1), users),
                             "item_id": self.item_ids.reshape(-1), "score": self.scores.reshape(-1)})



def _csr_rows(sequences: Sequences, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch row index, item id) pairs for the given rows of a CSR sequence set."""
    starts, ends = sequences.offsets[rows], sequences.offsets[rows + 1]
    counts = ends - starts
    batch_index = np.repeat(np.arange(len(rows)), counts)
    flat = np.concatenate([sequences.items[s:e] for s, e in zip(starts, ends)]) if len(rows) else []
    return torch.as_tensor(batch_index, dtype=torch.long), torch.as_tensor(np.asarray(flat), dtype=torch.long)


def _ranked_batches(score_fn: ScoreFn, data: EvalSet, num_items: int, depth: int, batch_size: int):
    """Per batch of users: (rows, top-`depth` items and scores, target mask, number of retrievable
    targets). History items are excluded; equal scores rank the lower item id first (`top_ranked`),
    so a ranking never depends on the order torch.topk happens to return ties in."""
    n_users = len(data.user_ids)
    with torch.no_grad():
        for start in range(0, n_users, batch_size):
            rows = np.arange(start, min(start + batch_size, n_users))
            scores = score_fn(rows, data.histories, data.user_ids[rows]).float().clone()
            if scores.shape != (len(rows), num_items):
                raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, "
                                 f"expected {(len(rows), num_items)}")
            hist_rows, hist_items = _csr_rows(data.histories, rows)
            scores[hist_rows, hist_items] = float("-inf")
            top_scores, top_items = top_ranked(scores, depth)
            target_rows, target_items = _csr_rows(data.targets, rows)
            is_target = torch.zeros(len(rows), num_items, dtype=torch.bool)
            is_target[target_rows, target_items] = True
            is_target[hist_rows, hist_items] = False  # a re-consumed history item cannot be retrieved
            yield rows, top_items, top_scores, is_target, is_target.sum(1).to(torch.float64)


def top_ranked(scores: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `depth` (scores, items) of each row ranked by score, equal scores by lower item id:
    exactly the first `depth` of a stable descending sort, at the cost of a top-k. The top-k's items
    are put in id order, then stably by score; a row where equal scores straddle the cut (more
    than `depth` items score at least the depth-th value) takes the full stable sort instead."""
    values, items = torch.topk(scores, depth, dim=1, sorted=False)
    straddled = (scores >= values.min(1, keepdim=True).values).sum(1) != depth
    items, order = items.sort(dim=1)
    values, order = values.gather(1, order).sort(dim=1, descending=True, stable=True)
    items = items.gather(1, order)
    if straddled.any():
        rows = straddled.nonzero().squeeze(1)
        full_values, full_items = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        values[rows], items[rows] = full_values[:, :depth], full_items[:, :depth]
    return values, items


def _user_values(top_items, is_target, n_targets, ks, discounts, ideal) -> dict[str, torch.Tensor]:
    """Recall / NDCG / HitRate@k per user of one batch (float64 tensors)."""
    hits = is_target.gather(1, top_items).to(torch.float64)
    values = {}
    for k in ks:
        hit_k = hits[:, :k]
        n_hit = hit_k.sum(1)
        idcg = ideal[(torch.clamp(n_targets, 1, k) - 1).long()]
        values[f"recall@{k}"] = n_hit / n_targets.clamp(min=1)
        values[f"ndcg@{k}"] = (hit_k * discounts[:k]).sum(1) / idcg
        values[f"hit_rate@{k}"] = (n_hit > 0).to(torch.float64)
    return values


def _prepare(ks, keep_top: int, num_items: int):
    ks = sorted(ks)
    depth = max(ks + [keep_top])
    if depth > num_items:
        raise ValueError(f"cutoff {depth} exceeds the number of items {num_items}")
    discounts = 1.0 / torch.log2(torch.arange(depth, dtype=torch.float64) + 2.0)
    return ks, depth, discounts, torch.cumsum(discounts, 0)


def evaluate(score_fn: ScoreFn, data: EvalSet, num_items: int, ks=(10, 20, 50),
             batch_size: int = 1024, keep_top: int = 0) -> tuple[dict[str, float], Ranking | None]:
    """Mean Recall/NDCG/HitRate@k over the users of `data`; optionally the top-`keep_top` lists."""
    ks, depth, discounts, ideal = _prepare(ks, keep_top, num_items)
    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg", "hit_rate")}
    evaluated = 0.0
    kept_items, kept_scores = [], []
    for rows, top_items, top_scores, is_target, n_targets in _ranked_batches(score_fn, data, num_items, depth,
                                                                             batch_size):
        valid = n_targets > 0
        for name, values in _user_values(top_items, is_target, n_targets, ks, discounts, ideal).items():
            sums[name] += float(values[valid].sum())
        evaluated += float(valid.sum())
        if keep_top:
            kept_items.append(top_items[:, :keep_top].numpy())
            kept_scores.append(top_scores[:, :keep_top].numpy())
    if evaluated == 0:
        raise ValueError("no user with a retrievable target to evaluate")
    metrics = {name: value / evaluated for name, value in sums.items()}
    metrics["users"] = evaluated
    ranking = None
    if keep_top:
        ranking = Ranking(data.user_ids, np.concatenate(kept_items), np.concatenate(kept_scores))
    return metrics, ranking


def top_k(score_fn: ScoreFn, histories: Sequences, num_items: int, k: int, batch_size: int = 1024) -> Ranking:
    """The top-`k` items of every user of `histories`, the user's own items excluded and ties by
    lower id, ranked exactly as the evaluator ranks: the serving lists (no targets, no metrics)."""
    no_targets = Sequences(histories.user_ids, np.zeros(len(histories) + 1, np.int64), np.zeros(0, np.int64))
    _, depth, _, _ = _prepare([k], 0, num_items)
    items, scores = [], []
    for _, top_items, top_scores, _, _ in _ranked_batches(score_fn, EvalSet(histories.user_ids, histories, no_targets),
                                                          num_items, depth, batch_size):
        items.append(top_items.numpy())
        scores.append(top_scores.numpy())
    empty = np.zeros((0, k))
    return Ranking(histories.user_ids, np.concatenate(items) if items else empty.astype(np.int64),
                   np.concatenate(scores) if scores else empty.astype(np.float32))


def user_metrics(score_fn: ScoreFn, data: EvalSet, num_items: int, ks=(10, 20, 50),
                 batch_size: int = 1024) -> pd.DataFrame:
    """The same figures per user: columns user_id, metric, k, value (users with a retrievable target
    only; none: no rows, which a shard of the users may have). Their means are `evaluate`'s
    metrics; paired comparisons (rec_core.eval.paired) use them."""
    ks, depth, discounts, ideal = _prepare(ks, 0, num_items)
    parts = []
    for rows, top_items, _, is_target, n_targets in _ranked_batches(score_fn, data, num_items, depth, batch_size):
        valid = (n_targets > 0).numpy()
        for name, values in _user_values(top_items, is_target, n_targets, ks, discounts, ideal).items():
            metric, k = name.split("@")
            parts.append(pd.DataFrame({"user_id": data.user_ids[rows][valid], "metric": metric, "k": int(k),
                                       "value": values.numpy()[valid]}))
    if not parts:
        return pd.DataFrame({"user_id": np.zeros(0, np.int64), "metric": pd.Series([], dtype=str),
                             "k": np.zeros(0, np.int64), "value": np.zeros(0)})
    return pd.concat(parts, ignore_index=True)
