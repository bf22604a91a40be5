"""The one evaluator: full ranking over all items, history excluded, batched in torch.

For a user with target set T (unique items) and the top-K list R (history items never appear):

    Recall@K  = |R ∩ T| / |T|
    NDCG@K    = sum_{r in R, r in T} 1 / log2(pos(r) + 2)  /  sum_{i < min(|T|, K)} 1 / log2(i + 2)
    HitRate@K = 1 if |R ∩ T| > 0 else 0

and each metric is the mean over users. Positions are 0-based ranks in R (not a set order, and
NDCG is normalised by the ideal DCG, not by the number of hits: the two bugs of the papers' code).
A target that is also in the history cannot be retrieved and is left out of T; a user left with
no target is not counted (the `users` figure says how many were).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
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


def _csr_rows(sequences: Sequences, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch row index, item id) pairs for the given rows of a CSR sequence set."""
    starts, ends = sequences.offsets[rows], sequences.offsets[rows + 1]
    counts = ends - starts
    batch_index = np.repeat(np.arange(len(rows)), counts)
    flat = np.concatenate([sequences.items[s:e] for s, e in zip(starts, ends)]) if len(rows) else []
    return torch.as_tensor(batch_index, dtype=torch.long), torch.as_tensor(np.asarray(flat), dtype=torch.long)


def evaluate(score_fn: ScoreFn, data: EvalSet, num_items: int, ks=(10, 20, 50),
             batch_size: int = 1024, keep_top: int = 0) -> tuple[dict[str, float], Ranking | None]:
    """Mean Recall/NDCG/HitRate@k over the users of `data`; optionally the top-`keep_top` lists."""
    ks = sorted(ks)
    depth = max(ks + [keep_top])
    if depth > num_items:
        raise ValueError(f"cutoff {depth} exceeds the number of items {num_items}")
    discounts = 1.0 / torch.log2(torch.arange(depth, dtype=torch.float64) + 2.0)
    ideal = torch.cumsum(discounts, 0)
    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg", "hit_rate")}
    kept_items, kept_scores = [], []
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
            top_scores, top_items = torch.topk(scores, depth, dim=1)
            target_rows, target_items = _csr_rows(data.targets, rows)
            is_target = torch.zeros(len(rows), num_items, dtype=torch.bool)
            is_target[target_rows, target_items] = True
            is_target[hist_rows, hist_items] = False  # a re-consumed history item cannot be retrieved
            n_targets = is_target.sum(1).to(torch.float64)
            valid = n_targets > 0
            hits = is_target.gather(1, top_items).to(torch.float64)
            for k in ks:
                hit_k = hits[:, :k]
                n_hit = hit_k.sum(1)
                dcg = (hit_k * discounts[:k]).sum(1)
                idcg = ideal[(torch.clamp(n_targets, 1, k) - 1).long()]
                sums[f"recall@{k}"] += float((n_hit[valid] / n_targets[valid]).sum())
                sums[f"ndcg@{k}"] += float((dcg[valid] / idcg[valid]).sum())
                sums[f"hit_rate@{k}"] += float((n_hit[valid] > 0).sum())
            sums.setdefault("_users", 0.0)
            sums["_users"] += float(valid.sum())
            if keep_top:
                kept_items.append(top_items[:, :keep_top].numpy())
                kept_scores.append(top_scores[:, :keep_top].numpy())
    evaluated = sums.pop("_users", 0.0)
    if evaluated == 0:
        raise ValueError("no user with a retrievable target to evaluate")
    metrics = {name: value / evaluated for name, value in sums.items()}
    metrics["users"] = evaluated
    ranking = None
    if keep_top:
        ranking = Ranking(data.user_ids, np.concatenate(kept_items), np.concatenate(kept_scores))
    return metrics, ranking
