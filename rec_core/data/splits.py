"""The two evaluation protocols of DESIGN.md, seeded and deterministic.

ComiRec protocol (multi-interest retrieval): users are split train/valid/test (8:1:1). Training
users contribute their whole sequence; a valid/test user's chronological sequence is cut into a
history (first 80%) and targets (the rest). Users with fewer than 2 interactions cannot be cut and
are skipped (counted).

Equal timestamps: interactions with the same timestamp have no order (ML-100K: three in four
interactions share their user's timestamp with another), so the cut never falls inside a group of
equal timestamps: it moves back to the group's start, so that every history item is strictly
earlier than every target; if that empties the history it moves forward to the group's end, and
if that leaves no target (one timestamp for the whole sequence) the plain 80% cut stays. Within a
tie, the loaders keep file order (a stable sort), which only the training sequences see.

ALKDRec protocol (session-based): sessions are split 6:2:2 at random; the last item is the target
and the prefix is truncated to its last `max_prefix` items.
"""

from __future__ import annotations

import logging
from collections.abc import ItemsView, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def assign_splits(ids: np.ndarray, ratios, seed: int) -> np.ndarray:
    """A split name per id: a seeded permutation cut by the ratios (sizes rounded down, rest to train)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    n_valid = int(len(ids) * ratios[1])
    n_test = int(len(ids) * ratios[2])
    labels = np.empty(len(ids), dtype=object)
    labels[order[: len(ids) - n_valid - n_test]] = "train"
    labels[order[len(ids) - n_valid - n_test: len(ids) - n_test]] = "valid"
    labels[order[len(ids) - n_test:]] = "test"
    return labels


def split_users(interactions: pd.DataFrame, ratios=(0.8, 0.1, 0.1), seed: int = 2026,
                min_length: int = 2) -> tuple[pd.DataFrame, dict[str, int]]:
    """Table `user_splits` (user_id, split) and skip counts; users shorter than min_length are skipped."""
    lengths = interactions.groupby("user_id").size()
    short = lengths[lengths < min_length]
    if len(short):
        log.warning("skipped %d users with fewer than %d interactions", len(short), min_length)
    users = np.sort(lengths[lengths >= min_length].index.to_numpy())
    table = pd.DataFrame({"user_id": users.astype(np.int64), "split": assign_splits(users, ratios, seed)})
    return table, {"users_too_short_to_split": int(len(short))}


@dataclass
class Sequences:
    """Per-user item sequences of one split, in CSR form (flat items + offsets)."""

    user_ids: np.ndarray  # [U]
    offsets: np.ndarray  # [U + 1]
    items: np.ndarray  # [total]
    times: np.ndarray | None = None  # [total] timestamps (or order indices) of the items, when known

    def __len__(self) -> int:
        return len(self.user_ids)

    def sequence(self, index: int) -> np.ndarray:
        return self.items[self.offsets[index]: self.offsets[index + 1]]

    def slice(self, start: int, stop: int) -> "Sequences":
        """Users start..stop-1 as their own CSR set (views, no copy of the items)."""
        first, last = self.offsets[start], self.offsets[stop]
        return Sequences(self.user_ids[start:stop], self.offsets[start:stop + 1] - first, self.items[first:last],
                         None if self.times is None else self.times[first:last])

    def list_array(self) -> pa.ListArray:
        """The sequences as one Arrow list<int64> array (no Python lists)."""
        return pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), pa.array(self.items, pa.int64()))


def sequences_for(interactions: pd.DataFrame, user_ids: np.ndarray) -> Sequences:
    """Chronological sequences of the given users (interactions must be sorted by user, ts)."""
    frame = interactions[interactions["user_id"].isin(user_ids)]
    users, counts = np.unique(frame["user_id"].to_numpy(), return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    times = frame["ts"].to_numpy(np.int64) if "ts" in frame else None
    return Sequences(users.astype(np.int64), offsets, frame["item_id"].to_numpy(np.int64), times)


@dataclass
class EvalSet:
    """Valid or test users: history (excluded from ranking and fed to the model) and targets."""

    user_ids: np.ndarray
    histories: Sequences
    targets: Sequences


def history_cuts(offsets: np.ndarray, history_fraction: float, times: np.ndarray | None = None) -> np.ndarray:
    """Per user of a CSR sequence set (`offsets`, every user at least 2 items; `times` ascending
    within a user, as the interactions table is), the index before which items are history:
    int(n * fraction), at least 1, at most n - 1, moved off a group of equal timestamps as the
    module docstring says. Vectorised over all users: no per-user Python."""
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    if len(lengths) and lengths.min() < 2:
        raise ValueError("every user needs at least 2 items to be cut into history and targets")
    cuts = np.minimum(np.maximum((lengths * history_fraction).astype(np.int64), 1), lengths - 1)
    if times is None or not len(cuts):
        return cuts
    times = np.asarray(times)
    at = offsets[:-1] + cuts
    tied = times[at - 1] == times[at]
    if not tied.any():
        return cuts
    # the first and one-past-last position of each position's group of equal timestamps in its user
    positions = np.arange(len(times), dtype=np.int64)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    begins = np.ones(len(times), dtype=bool)
    begins[1:] = (times[1:] != times[:-1]) | (owner[1:] != owner[:-1])
    ends = np.ones(len(times), dtype=bool)
    ends[:-1] = begins[1:]
    group_start = np.maximum.accumulate(np.where(begins, positions, 0))
    group_end = np.minimum.accumulate(np.where(ends, positions, len(times))[::-1])[::-1] + 1
    start, end = group_start[at] - offsets[:-1], group_end[at] - offsets[:-1]
    moved = np.where(start > 0, start, np.where(end < lengths, end, cuts))
    return np.where(tied, moved, cuts)


def cut_history(sequences: Sequences, history_fraction: float = 0.8) -> EvalSet:
    """Per user, the items before `history_cuts` are history, the rest targets."""
    cuts = history_cuts(sequences.offsets, history_fraction, sequences.times)
    lengths = np.diff(sequences.offsets)
    position = np.arange(len(sequences.items), dtype=np.int64) - np.repeat(sequences.offsets[:-1], lengths)
    history = position < np.repeat(cuts, lengths)

    def csr(mask, counts, with_times):
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        times = sequences.times[mask].astype(np.int64) if with_times and sequences.times is not None else None
        return Sequences(sequences.user_ids, offsets, sequences.items[mask].astype(np.int64), times)

    return EvalSet(sequences.user_ids, csr(history, cuts, True), csr(~history, lengths - cuts, False))


@dataclass
class ProtocolData:
    """Everything a model needs under the ComiRec protocol."""

    num_items: int
    train: Sequences
    valid: EvalSet
    test: EvalSet


def build_protocol(interactions: pd.DataFrame, user_splits: pd.DataFrame, num_items: int,
                   history_fraction: float = 0.8) -> ProtocolData:
    def users(name):
        return user_splits.loc[user_splits["split"] == name, "user_id"].to_numpy()

    return ProtocolData(
        num_items=num_items,
        train=sequences_for(interactions, users("train")),
        valid=cut_history(sequences_for(interactions, users("valid")), history_fraction),
        test=cut_history(sequences_for(interactions, users("test")), history_fraction),
    )


class Histories(Mapping):
    """id -> item ids (in time order) of many ids, held as CSR arrays (a Sequences, ids ascending)
    instead of a dict of Python lists: 800k histories of 15 items are ~100 MiB of arrays against
    ~500 MiB of lists and int objects. It reads as the dict it replaces: `histories[id]` is a list,
    iteration and items() go in id order, `==` compares with any mapping; `list_array` gives a range
    of the histories as one Arrow list column without building Python lists."""

    def __init__(self, sequences: Sequences):
        self.sequences = sequences

    @classmethod
    def of(cls, histories: Mapping) -> "Histories":
        """A Histories of any id -> item ids mapping (returned as it is when it already is one)."""
        if isinstance(histories, Histories):
            return histories
        ids = np.fromiter(histories, np.int64, len(histories))
        order = np.argsort(ids, kind="stable")
        lengths = np.fromiter((len(histories[int(i)]) for i in ids[order]), np.int64, len(ids))
        items = np.fromiter((item for i in ids[order] for item in histories[int(i)]), np.int64, int(lengths.sum()))
        return cls(Sequences(ids[order], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), items))

    def __getitem__(self, history_id) -> list[int]:
        ids = self.sequences.user_ids
        index = int(np.searchsorted(ids, history_id))
        if index == len(ids) or ids[index] != history_id:
            raise KeyError(history_id)
        return self.sequences.sequence(index).tolist()

    def __iter__(self):
        return iter(self.sequences.user_ids.tolist())

    def __len__(self) -> int:
        return len(self.sequences)

    def items(self):
        return _HistoryItems(self)

    def without(self, history_ids) -> "Histories":
        """These histories less those of `history_ids`."""
        keep = ~np.isin(self.sequences.user_ids, np.fromiter(history_ids, np.int64))
        if keep.all():
            return self
        offsets, lengths = self.sequences.offsets[:-1][keep], np.diff(self.sequences.offsets)[keep]
        new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        positions = np.repeat(offsets - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
        return Histories(Sequences(self.sequences.user_ids[keep], new_offsets, self.sequences.items[positions]))

    def list_array(self, start: int = 0, stop: int | None = None) -> pa.ListArray:
        """Histories start..stop-1 (in id order) as an Arrow list<int64> array."""
        return self.sequences.slice(start, len(self) if stop is None else min(stop, len(self))).list_array()


class _HistoryItems(ItemsView):
    """(id, item ids) pairs straight from the arrays (ItemsView's own would search every id)."""

    def __iter__(self):
        sequences = self._mapping.sequences
        offsets = sequences.offsets.tolist()
        for index, history_id in enumerate(sequences.user_ids.tolist()):
            yield history_id, sequences.items[offsets[index]:offsets[index + 1]].tolist()


def recent_items(interactions: pd.DataFrame, users: np.ndarray, max_items: int) -> Histories:
    """user -> its latest `max_items` items, in the order of `interactions` (by time: ingest sorts
    them), for the `users` that have interactions. Array work only: no per-user Python, no copy of
    the frame."""
    user_ids = interactions["user_id"].to_numpy(np.int64)
    chosen = np.flatnonzero(np.isin(user_ids, np.asarray(users, np.int64)))
    chosen = chosen[np.argsort(user_ids[chosen], kind="stable")]  # each user's rows together, in their order
    owners = user_ids[chosen]
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(owners)].astype(np.int64)
    first = np.maximum(starts, ends - max_items)
    lengths = ends - first
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    positions = chosen[np.repeat(first - offsets[:-1], lengths) + np.arange(offsets[-1])]
    return Histories(Sequences(owners[starts], offsets, interactions["item_id"].to_numpy(np.int64)[positions]))


def split_sessions(sessions: pd.DataFrame, ratios=(0.6, 0.2, 0.2), seed: int = 2026,
                   max_prefix: int = 10) -> pd.DataFrame:
    """Table (session_id, split, prefix, target): last item is the target, prefix = last max_prefix before it.

    Sessions of length < 2 have no prefix and are left out (the loader already counts them)."""
    ordered = sessions.sort_values(["session_id", "pos"], kind="stable")
    grouped = ordered.groupby("session_id")["item_id"].apply(lambda s: s.to_numpy(np.int64))
    grouped = grouped[grouped.map(len) >= 2]
    session_ids = grouped.index.to_numpy(np.int64)
    return pd.DataFrame({
        "session_id": session_ids,
        "split": assign_splits(session_ids, ratios, seed),
        "prefix": [items[:-1][-max_prefix:] for items in grouped],
        "target": [int(items[-1]) for items in grouped],
    })
