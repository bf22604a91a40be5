"""Active selection of the training sessions the LLM teacher ranks (ALKDRec, arXiv 2502.15685).

An LLM is too slow to rank every training session, so a budget of sessions is chosen from the
pool, one at a time:

- difficulty (from the conventional teacher): df_s = -(1/|s|) sum_{v in s} sigmoid(enc(s)^T e_v),
  with enc(s) the teacher's session vector of the session's prefix and v over the prefix's items
  (the session as the LLM sees it; the target is held out). Sessions whose own items the teacher
  scores low are hard.
- gains: sessions ranked by difficulty, hardest first (rank 1), g_ef(s) = 1 / rank(s)^mu (mu = 10):
  what an effective LLM prediction on s is worth; a similar prediction is worth g_si = c_si g_ef and
  an incorrect one costs g_in = c_in g_ef (the paper: c_si = c_in = 1/2).
- the policy p (a distribution over the pool) maximises the minimum expected gain over every
  assignment of outcomes to sessions with the given counts (k_ef : k_si : k_in = 1 : 5 : 4 of the
  pool): max_p min_a sum_s p_s gain_a(s)(s).

The closed form (derived here from that problem; the paper's own printed form was not available,
so this is checked against a numeric LP solve with OR-Tools in tests/test_distillation.py). Write
w_s = p_s g_ef(s). The adversary gives the worst outcome to the largest w: sorting w descending,
positions 1..k_in are incorrect (-c_in), the next k_si similar (+c_si), the last k_ef effective (+1),
so the value is sum_j c_(j) w_(j) with c_(j) non-decreasing. The optimum spreads p over a support
T so that every w_s is equal: p_s = (1/g_ef(s)) / H_T with H_T = sum_{t in T} 1/g_ef(t), value
C_|T| / H_T with C_m = sum_{j<=m} c_(j). When some value is positive, T is the m sessions of largest
gain (they cost least probability per unit of w) with m* = argmax_m C_m / H_m; when every C_m is
negative (more harm than help whatever is chosen) T is taken from the smallest gains instead, which
loses least. p is 0 beyond the support. With mu = 10 and the paper's counts, C_m turns positive
only past ~80% of the pool, and p ~ rank^mu on the support puts its mass on the sessions just inside
m*: neither the hardest (their predictions are most likely wrong and the adversary makes them so)
nor the easiest (excluded from the support).

Draws: a session is drawn from p*, removed, and the problem re-solved on the remaining pool (the
counts re-derived from the ratio), until the budget is spent.

Other policies: `binary` (the robust-distillation variant: two outcomes, useful = effective or
similar at +g_ef with k_ef + k_si sessions, harmful at -c_in g_ef with k_in; our reading, the paper
names it only), `random` (uniform without replacement), `easiest` / `hardest` (by difficulty).
All computation is in log space: 1/g_ef = rank^mu overflows float64 past mu log10(rank) > 308.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rec_core.models.names import DISTILL_POLICIES as POLICIES


def session_difficulty(session_vectors: np.ndarray, item_vectors: np.ndarray, offsets: np.ndarray,
                       items: np.ndarray) -> np.ndarray:
    """df_s = -mean_{v in s} sigmoid(<session_vectors[s], item_vectors[v]>), the items of session s
    being items[offsets[s]:offsets[s + 1]] (each session needs at least one)."""
    lengths = np.diff(offsets)
    if (lengths < 1).any():
        raise ValueError(f"session row {int(np.argmin(lengths))} has no items: difficulty needs a prefix")
    rows = np.repeat(np.arange(len(lengths)), lengths)
    logits = np.einsum("nd,nd->n", session_vectors[rows], item_vectors[items])
    scores = 1.0 / (1.0 + np.exp(-logits))
    return -np.bincount(rows, weights=scores, minlength=len(lengths)) / lengths


def hardness_ranks(difficulty: np.ndarray) -> np.ndarray:
    """Each session's rank by difficulty, 1 the hardest (ties: the earlier row first)."""
    ranks = np.empty(len(difficulty))
    ranks[np.argsort(-difficulty, kind="stable")] = np.arange(1, len(difficulty) + 1)
    return ranks


def log_effective_gains(difficulty: np.ndarray, mu: float) -> np.ndarray:
    """log g_ef = -mu log rank, rank 1 the hardest session."""
    return -mu * np.log(hardness_ranks(difficulty))


@dataclass(frozen=True)
class Outcomes:
    """The outcome model: coefficient of g_ef per outcome and its share of the pool. ALKDRec's
    ternary model is effective +1 (1/10), similar +1/2 (5/10), incorrect -1/2 (4/10)."""

    coefficients: tuple[float, ...]
    shares: tuple[float, ...]

    def counts(self, pool: int) -> np.ndarray:
        """Outcome counts for a pool that sum to it (largest remainders)."""
        exact = np.asarray(self.shares, float) / sum(self.shares) * pool
        counts = np.floor(exact).astype(int)
        counts[np.argsort(-(exact - counts), kind="stable")[: pool - counts.sum()]] += 1
        return counts


def ternary_outcomes(ratio=(1, 5, 4), similar_gain: float = 0.5, incorrect_loss: float = 0.5) -> Outcomes:
    return Outcomes((1.0, similar_gain, -incorrect_loss), tuple(float(r) for r in ratio))


def binary_outcomes(ratio=(1, 5, 4), incorrect_loss: float = 0.5) -> Outcomes:
    return Outcomes((1.0, -incorrect_loss), (float(ratio[0] + ratio[1]), float(ratio[2])))


def _log_cumsum_exp(values: np.ndarray) -> np.ndarray:
    return np.logaddexp.accumulate(values) if len(values) else values


def maxmin_policy(log_gains: np.ndarray, outcomes: Outcomes) -> tuple[np.ndarray, float]:
    """(p*, the max-min value) for one pool (module docstring)."""
    order = np.argsort(-log_gains, kind="stable")
    p_sorted, value = _maxmin_sorted(log_gains[order], outcomes)
    p = np.empty(len(log_gains))
    p[order] = p_sorted
    return p, value


def _maxmin_sorted(log_gains: np.ndarray, outcomes: Outcomes) -> tuple[np.ndarray, float]:
    """maxmin_policy for gains sorted largest first (the draws keep their pool in that order)."""
    pool = len(log_gains)
    counts = outcomes.counts(pool)
    bands = np.repeat(np.sort(outcomes.coefficients), counts[np.argsort(outcomes.coefficients)])
    worst_first = np.cumsum(bands)  # C_m
    best = None
    for order in (np.arange(pool), np.arange(pool)[::-1]):  # largest gains first, then smallest first
        log_h = _log_cumsum_exp(-log_gains[order])  # log H_m
        with np.errstate(divide="ignore"):
            values = np.sign(worst_first) * np.exp(np.log(np.abs(worst_first)) - log_h)
        m = int(np.argmax(values)) + 1
        if best is None or values[m - 1] > best[2]:
            best = (order, m, float(values[m - 1]), log_h[m - 1])
        if best[2] >= 0:  # a non-negative value: the largest gains are the support (docstring)
            break
    order, m, value, log_h = best
    p = np.zeros(pool)
    p[order[:m]] = np.exp(-log_gains[order[:m]] - log_h)
    return p / p.sum(), value


def select_sessions(policy: str, difficulty: np.ndarray, budget: int, seed: int, mu: float = 10.0,
                    ratio=(1, 5, 4), similar_gain: float = 0.5, incorrect_loss: float = 0.5
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows in draw order, the probability each had when drawn) of `budget` sessions (all of
    them when the pool is smaller). Deterministic for a seed."""
    if policy not in POLICIES:
        raise ValueError(f"unknown selection policy {policy!r}: one of {', '.join(POLICIES)}")
    pool = len(difficulty)
    budget = min(int(budget), pool)
    if policy in ("easiest", "hardest"):
        order = np.argsort(difficulty if policy == "easiest" else -difficulty, kind="stable")[:budget]
        return order, np.ones(budget)
    rng = np.random.default_rng([seed, POLICIES.index(policy)])
    if policy == "random":
        return rng.permutation(pool)[:budget], np.full(budget, np.nan)
    outcomes = (ternary_outcomes(ratio, similar_gain, incorrect_loss) if policy == "alkdrec"
                else binary_outcomes(ratio, incorrect_loss))
    log_gains = log_effective_gains(difficulty, mu)
    remaining = np.argsort(-log_gains, kind="stable")  # kept in gain order: no sort per draw
    chosen, probabilities = [], []
    for _ in range(budget):
        p, _ = _maxmin_sorted(log_gains[remaining], outcomes)
        pick = int(rng.choice(len(remaining), p=p))
        chosen.append(int(remaining[pick]))
        probabilities.append(float(p[pick]))
        remaining = np.delete(remaining, pick)
    return np.asarray(chosen, np.int64), np.asarray(probabilities)
