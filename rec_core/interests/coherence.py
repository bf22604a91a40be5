"""Does a semantic grouping group by meaning? Pairwise label coherence against random partitions.

coherence = over all users and all pairs of items placed in the same cluster, the share of pairs
whose items have at least one label (genre / category) in common. The baseline is the same figure
for random partitions of each user's items with the same cluster sizes (averaged over `draws`
shuffles, seeded). A grouping that beats its baseline clearly groups by meaning; one equal to it
does not, whatever its JSON validity rate. The same random partitions are the control of the
training losses (`shuffled_clusters`): semantic content removed, sizes kept.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np


def random_partition(clusters: list[list[int]], rng: np.random.Generator) -> list[list[int]]:
    """The same items in clusters of the same sizes, assigned at random: the grouping's semantic
    content removed, everything else kept."""
    items = np.array([item for cluster in clusters for item in cluster], dtype=np.int64)
    sizes = np.cumsum([len(cluster) for cluster in clusters])[:-1]
    return [part.tolist() for part in np.split(rng.permutation(items), sizes)]


def shuffled_clusters(clusters_by_key: dict[int, list[list[int]]], seed: int) -> dict[int, list[list[int]]]:
    """The random-cluster control of a clusters table (models named "...+shuffled"): every user's
    (or synthesized user's) clusters re-partitioned at random with the same sizes, seeded per key so
    that the control does not depend on which other users are present."""
    return {key: random_partition(clusters, np.random.default_rng([seed, key]))
            for key, clusters in clusters_by_key.items()}


def _pair_stats(clusters: list[list[int]], labels: dict[int, frozenset]) -> tuple[int, int]:
    shared = total = 0
    for cluster in clusters:
        for a, b in combinations(cluster, 2):
            total += 1
            shared += bool(labels.get(a, frozenset()) & labels.get(b, frozenset()))
    return shared, total


def coherence(groupings: list[list[list[int]]], labels: dict[int, frozenset], draws: int = 20,
              seed: int = 0, max_users: int | None = None) -> dict[str, float]:
    """`groupings[u]` is user u's clusters (lists of item ids); returns coherence, random baseline,
    pairs and users. Over `max_users` groupings, a seeded sample of that many is read (in their
    order; `sampled_from` then says of how many)."""
    sampled_from = None
    if max_users is not None and len(groupings) > max_users:
        keep = np.sort(np.random.default_rng([seed, max_users]).choice(len(groupings), max_users, replace=False))
        sampled_from, groupings = len(groupings), [groupings[i] for i in keep]
    rng = np.random.default_rng(seed)
    shared = total = 0
    random_shared = random_total = 0
    for clusters in groupings:
        s, t = _pair_stats(clusters, labels)
        shared, total = shared + s, total + t
        for _ in range(draws):
            s, t = _pair_stats(random_partition(clusters, rng), labels)
            random_shared, random_total = random_shared + s, random_total + t
    return {"coherence": shared / total if total else float("nan"),
            "random_baseline": random_shared / random_total if random_total else float("nan"),
            "pairs": total, "users": len(groupings), **({"sampled_from": sampled_from} if sampled_from else {})}
