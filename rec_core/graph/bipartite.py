"""The bipartite user-item graph of what the ComiRec protocol lets a model see, in CSR form.

Edges: every interaction of a training user, and the history part of every valid/test user (the
same cut as the evaluator's, rec_core.data.splits.cut_history). A target is never an edge, so
neither a description nor a graph embedding can carry a valid/test user's targets. Users are the
users of `user_splits` (rows in sorted user-id order); items are all ids 0..num_items-1 (an item
without a visible interaction has no edges).

Both directions are stored newest first: a user's items by the time the user reached them, an item's
users by the time they reached it (ties: the later interaction in the user's sequence first, then
the higher user id). `neighbours` returns them in that order.

Neighbour sampling (`sample_neighbours`) is deterministic per (node, layer, seed): a node with at
most k neighbours gets all of them; otherwise the ceil(k/2) most recent plus floor(k/2) drawn
uniformly from the older ones by a generator seeded with (seed, node type, node id, layer), listed
newest first. Recency keeps what a node is now; the seeded draw lets different layers see
different parts of a long history. An unchanged neighbourhood gives the same sample in every run,
so the prompt built from it is byte-identical and hits the LLM cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rec_core.data.splits import ProtocolData, build_protocol

USER, ITEM = "user", "item"
NODE_TYPE_CODE = {USER: 0, ITEM: 1}


@dataclass
class BipartiteGraph:
    user_ids: np.ndarray  # [U] source user ids, sorted; row r of the user side is user_ids[r]
    num_items: int
    user_offsets: np.ndarray  # [U + 1]
    user_items: np.ndarray  # item ids, per user newest first
    item_offsets: np.ndarray  # [num_items + 1]
    item_users: np.ndarray  # user rows, per item newest first

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def user_row(self, user_ids: np.ndarray) -> np.ndarray:
        """Rows of the given user ids; KeyError naming the first id that is not in the graph."""
        rows = np.searchsorted(self.user_ids, user_ids)
        bad = (rows >= len(self.user_ids)) | (self.user_ids[np.minimum(rows, len(self.user_ids) - 1)] != user_ids)
        if np.any(bad):
            raise KeyError(f"user {int(np.asarray(user_ids)[bad][0])} is not in the graph")
        return rows

    def neighbours(self, node_type: str, index: int) -> np.ndarray:
        """Newest first: a user's (row `index`) item ids, or an item's user rows."""
        if node_type == USER:
            return self.user_items[self.user_offsets[index]: self.user_offsets[index + 1]]
        return self.item_users[self.item_offsets[index]: self.item_offsets[index + 1]]

    def degree(self, node_type: str) -> np.ndarray:
        return np.diff(self.user_offsets if node_type == USER else self.item_offsets)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """(user row, item id) of every edge, duplicates removed, in user-row then item order."""
        rows = np.repeat(np.arange(self.num_users), np.diff(self.user_offsets))
        pairs = np.unique(np.stack([rows, self.user_items], 1), axis=0) if len(rows) else np.zeros((0, 2), np.int64)
        return pairs[:, 0], pairs[:, 1]


def graph_from_visible(user_ids: np.ndarray, users: np.ndarray, items: np.ndarray, times: np.ndarray,
                       num_items: int) -> BipartiteGraph:
    """The graph of visible interactions (user id, item id, time), rows in chronological order per
    user. `user_ids`: every user of the graph (sorted), also those without an edge."""
    user_ids = np.sort(np.asarray(user_ids, np.int64))
    rows = np.searchsorted(user_ids, users)
    position = np.arange(len(users))  # the order within a user's sequence breaks equal times
    by_user = np.lexsort((-position, -times, rows))  # per user newest first
    user_offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(user_ids)))]).astype(np.int64)
    by_item = np.lexsort((-rows, -position, -times, items))
    item_offsets = np.concatenate([[0], np.cumsum(np.bincount(items, minlength=num_items))]).astype(np.int64)
    return BipartiteGraph(user_ids, num_items, user_offsets, np.asarray(items, np.int64)[by_user],
                          item_offsets, rows[by_item].astype(np.int64))


def protocol_graph(data: ProtocolData) -> BipartiteGraph:
    """The graph of already built protocol data: training sequences plus valid/test histories
    (module docstring); its users are every user of the three splits."""
    parts = [data.train, data.valid.histories, data.test.histories]
    users = np.concatenate([np.repeat(p.user_ids, np.diff(p.offsets)) for p in parts])
    items = np.concatenate([p.items for p in parts])
    times = np.concatenate([p.times if p.times is not None else np.arange(len(p.items)) for p in parts])
    return graph_from_visible(np.concatenate([p.user_ids for p in parts]), users, items, times, data.num_items)


def visible_graph(interactions: pd.DataFrame, user_splits: pd.DataFrame, num_items: int,
                  history_fraction: float) -> BipartiteGraph:
    """The protocol's graph of the run's tables (protocol_graph of build_protocol)."""
    return protocol_graph(build_protocol(interactions, user_splits, num_items, history_fraction))


def sample_neighbours(graph: BipartiteGraph, node_type: str, index: int, layer: int, k: int,
                      seed: int) -> np.ndarray:
    """Up to k neighbours of a node (user row or item id), newest first (module docstring)."""
    ordered = graph.neighbours(node_type, index)
    if len(ordered) <= k:
        return ordered
    recent = k - k // 2
    node_id = int(graph.user_ids[index]) if node_type == USER else int(index)
    rng = np.random.default_rng([seed, NODE_TYPE_CODE[node_type], node_id, layer])
    older = rng.choice(len(ordered) - recent, k - recent, replace=False) + recent
    return ordered[np.sort(np.concatenate([np.arange(recent), older]))]


def normalized_adjacency(graph: BipartiteGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """LightGCN's symmetric normalisation D^-1/2 A D^-1/2 of the (users + items) x (users + items)
    adjacency (users first, item i at row U + i; repeated interactions count once):
    (row, column, value, size)."""
    user_rows, item_ids = graph.edges()
    size = graph.num_users + graph.num_items
    rows = np.concatenate([user_rows, graph.num_users + item_ids])
    cols = np.concatenate([graph.num_users + item_ids, user_rows])
    degree = np.bincount(rows, minlength=size).astype(np.float64)
    scale = 1.0 / np.sqrt(np.maximum(degree, 1.0))
    return rows, cols, (scale[rows] * scale[cols]).astype(np.float32), size
