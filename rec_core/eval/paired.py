"""Paired comparison of two models on the same users: per-user differences with a bootstrap 95%
confidence interval.

Two models scored on the same test users are compared user by user (model a minus model b), not
as two independent means: the users' difficulty is shared, so the paired interval is the honest
(and much narrower) one. With several runs (seeds), each user's figure is first averaged over the
runs that scored it, then the users are resampled: the unit of evidence is the user, and runs
only reduce the noise of each user's figure. The interval is the percentile bootstrap of the mean
difference (`draws` resamples of the users with replacement, seeded).

    diff = paired_difference(user_metrics_a, user_metrics_b, metric="recall", k=50)
    print(diff.difference, diff.low, diff.high, diff.users)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PairedDifference:
    metric: str
    users: int  # users scored by both models
    runs: int  # runs averaged per user (the most any user had)
    mean_a: float
    mean_b: float
    difference: float  # mean over users of (a - b)
    low: float  # bootstrap confidence interval of `difference`
    high: float
    level: float

    @property
    def relative(self) -> float:
        """difference / mean_b (e.g. 0.05 = a is 5% above b)."""
        return self.difference / self.mean_b if self.mean_b else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "relative": self.relative}


def bootstrap_interval(differences: np.ndarray, draws: int = 10_000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `differences` (one value per user)."""
    differences = np.asarray(differences, dtype=np.float64)
    if len(differences) < 2:
        raise ValueError(f"a paired interval needs at least 2 users, got {len(differences)}")
    rng = np.random.default_rng(seed)
    means = np.empty(draws)
    for start in range(0, draws, 1000):  # bounded memory whatever the number of users
        count = min(1000, draws - start)
        picks = rng.integers(0, len(differences), size=(count, len(differences)))
        means[start:start + count] = differences[picks].mean(1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, metric: str, k: int, draws: int = 10_000,
                      level: float = 0.95, seed: int = 0) -> PairedDifference:
    """a, b: per-user metric rows (user_id, metric, k, value[, run]) of two models, as
    rec_core.eval.evaluator.user_metrics writes them, one or more runs each."""
    def per_user(frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame[(frame["metric"] == metric) & (frame["k"] == k)]
        runs = rows.groupby("user_id").size()
        return pd.DataFrame({"value": rows.groupby("user_id")["value"].mean(), "runs": runs})

    left, right = per_user(a), per_user(b)
    joined = left.add_suffix("_a").join(right.add_suffix("_b"), how="inner")
    if joined.empty:
        raise ValueError(f"no user has {metric}@{k} in both models' rows")
    differences = (joined["value_a"] - joined["value_b"]).to_numpy()
    low, high = bootstrap_interval(differences, draws, level, seed)
    return PairedDifference(f"{metric}@{k}", len(joined), int(max(joined["runs_a"].max(), joined["runs_b"].max())),
                            float(joined["value_a"].mean()), float(joined["value_b"].mean()),
                            float(differences.mean()), low, high, level)
