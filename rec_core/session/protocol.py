"""The session protocol as the training recipe and the evaluator read it (ProtocolData).

- train: every training session's whole sequence (`sessions` table, in `pos` order), so the
  recipe's examples are every position >= 1 with up to `max_history` items before it as the prefix
  (the usual prefix augmentation of session-based training; the last position is exactly the
  split's (prefix, target)).
- valid / test: one row per session, history = the split's prefix (its last
  `split.session_max_prefix` items), targets = the one target item. The evaluator ranks every
  item with the prefix's items excluded, as for users' histories.

Session ids take the place of user ids throughout.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rec_core.data.splits import EvalSet, ProtocolData, Sequences


def _sequences(ids: np.ndarray, parts: list[np.ndarray]) -> Sequences:
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    items = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return Sequences(np.asarray(ids, np.int64), offsets, items)


def evaluation_sessions(session_splits: pd.DataFrame, split: str) -> EvalSet:
    rows = session_splits[session_splits["split"] == split].sort_values("session_id")
    ids = rows["session_id"].to_numpy(np.int64)
    return EvalSet(ids, _sequences(ids, [np.asarray(p, np.int64) for p in rows["prefix"]]),
                   _sequences(ids, [np.array([t], np.int64) for t in rows["target"]]))


def session_protocol(sessions: pd.DataFrame, session_splits: pd.DataFrame, num_items: int) -> ProtocolData:
    """ProtocolData of the session protocol (module docstring); a session of session_splits that
    is missing from `sessions` is an error naming it."""
    train_ids = np.sort(session_splits.loc[session_splits["split"] == "train", "session_id"].to_numpy(np.int64))
    ordered = sessions[sessions["session_id"].isin(train_ids)].sort_values(["session_id", "pos"], kind="stable")
    grouped = dict(iter(ordered.groupby("session_id")["item_id"]))
    missing = [int(s) for s in train_ids if s not in grouped]
    if missing:
        raise ValueError(f"session_splits names training session {missing[0]} (and {len(missing) - 1} more) "
                         "that the sessions table does not hold")
    train = _sequences(train_ids, [grouped[s].to_numpy(np.int64) for s in train_ids])
    return ProtocolData(num_items=num_items, train=train, valid=evaluation_sessions(session_splits, "valid"),
                        test=evaluation_sessions(session_splits, "test"))
