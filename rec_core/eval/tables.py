"""The metrics table in the shape people read it (pandas only: no torch, so the report can use it)."""

from __future__ import annotations

import pandas as pd


def wide_metrics(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """A `metrics` table as one row per model and one column per metric@k (metric, then k, in order)."""
    view = metrics[metrics["split"] == split].copy()
    view["column"] = view["metric"] + "@" + view["k"].astype(str)
    table = view.pivot(index="model", columns="column", values="value")
    return table[sorted(table.columns, key=lambda c: (c.split("@")[0], int(c.split("@")[1])))]
