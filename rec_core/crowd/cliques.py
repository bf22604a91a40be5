"""Groups of mutually similar users: the cliques behind the synthesized users (arXiv 2507.10917).

    cliques = UserCliques(neighbours=10, min_size=3, max_size=5).fit(interactions).cliques_

1. Similarity: cosine of the users' binary item vectors, computed as a sparse product in chunks
   of `chunk_users` rows, so the cost is the number of user pairs that share an item, never all
   pairs; each chunk's best neighbours are chosen by array operations (no per-user Python) and
   only they are kept. Items engaged by more than `max_item_users` users are left out of this
   product: they make O(n^2) pairs each and say little about taste (everyone watched Star Wars);
   the cosine is over the kept items in both its numerator and its norms. A pair needs at least
   `min_shared_items` shared items and cosine >= `min_similarity`.
2. Graph (edge arrays): an edge between u and v when each is among the other's `neighbours` most
   similar users (mutual k-nearest neighbours), weighted by the cosine. Mutual kNN keeps hubs
   from joining everything and bounds every degree by `neighbours`, so clique enumeration is
   cheap (`maximal_cliques`: networkx's clique search over plain sets; networkx's graph of every
   user cost ~1 GiB at 800k users, and `graph_` still builds one when asked).
3. Cliques: the maximal cliques of that graph with at least `min_size` users, best first by mean
   pairwise cosine; each user joins at most one group; a clique larger than `max_size` drops its
   least-connected members; the rest of a clique whose users were taken is still a clique and
   competes again. Every group is therefore a true clique of the mutual-kNN graph, of size
   `min_size`..`max_size`.
"""

from __future__ import annotations

import heapq
import logging

import networkx as nx
import numpy as np
import pandas as pd
from scipy import sparse

log = logging.getLogger(__name__)


class UserCliques:
    def __init__(self, neighbours: int = 10, min_similarity: float = 0.05, min_shared_items: int = 2,
                 max_item_users: int = 300, min_size: int = 3, max_size: int = 5, chunk_users: int = 2048):
        if not 2 <= min_size <= max_size:
            raise ValueError(f"need 2 <= min_size <= max_size, got {min_size}, {max_size}")
        self.neighbours, self.min_similarity, self.min_shared_items = neighbours, min_similarity, min_shared_items
        self.max_item_users, self.min_size, self.max_size = max_item_users, min_size, max_size
        self.chunk_users = chunk_users

    def fit(self, interactions: pd.DataFrame, taken=()) -> "UserCliques":
        """interactions: user_id, item_id (the training users' interactions). `taken`: users already in
        a group (an incremental night's kept cliques): they shape the similarity graph like everyone
        else but join no new group, so the new groups are those a full selection would add."""
        users, user_rows = np.unique(interactions["user_id"].to_numpy(), return_inverse=True)
        items, item_cols = np.unique(interactions["item_id"].to_numpy(), return_inverse=True)
        matrix = sparse.csr_matrix((np.ones(len(user_rows), dtype=np.float32), (user_rows, item_cols)),
                                   shape=(len(users), len(items)))
        matrix.data[:] = 1.0  # binary: a repeated (user, item) pair was summed into one entry (no drop_duplicates)
        item_users = np.asarray(matrix.sum(0)).ravel()
        kept = sparse.diags((item_users <= self.max_item_users).astype(np.float32))
        candidates = (matrix @ kept).tocsr()
        degree = np.asarray(candidates.sum(1)).ravel()  # the cosine's norms count the same items as its dot product
        transposed = candidates.T.tocsr()
        heads, tails, weights = [], [], []  # each user's `neighbours` most similar users, best first
        for start in range(0, len(users), self.chunk_users):
            shared = (candidates[start:start + self.chunk_users] @ transposed).tocsr()
            lengths = np.diff(shared.indptr)
            rows = start + np.repeat(np.arange(shared.shape[0]), lengths)
            cols, counts = shared.indices.astype(np.int64), shared.data
            cosine = counts / np.sqrt(degree[rows] * degree[cols])
            keep = (cols != rows) & (counts >= self.min_shared_items) & (cosine >= self.min_similarity)
            position = np.arange(len(cols)) - np.repeat(shared.indptr[:-1], lengths)  # place in its row
            rows, cols, cosine, position = rows[keep], cols[keep], cosine[keep], position[keep]
            order = np.lexsort((position, -cosine, rows))  # per row: by cosine, ties in row order (stable)
            rows, cols, cosine = rows[order], cols[order], cosine[order]
            first = np.searchsorted(rows, rows, side="left")
            best = np.arange(len(rows)) - first < self.neighbours
            heads.append(rows[best])
            tails.append(cols[best])
            weights.append(cosine[best])
        heads, tails, weights = (np.concatenate(parts) if parts else np.zeros(0, np.int64)
                                 for parts in (heads, tails, weights))
        del matrix, kept, candidates, transposed  # the neighbours are found: let the products go
        # mutual: (u, v) is kept when (v, u) is among the pairs too; each edge once, from its lower end
        mutual = np.isin(tails * len(users) + heads, heads * len(users) + tails)
        edge = mutual & (tails > heads)
        lower, upper, weight = heads[edge], tails[edge], weights[edge]
        row_of = {int(user): row for row, user in enumerate(users.tolist())}
        groups = self._select(lower, upper, weight, len(users), {row_of[int(u)] for u in taken if int(u) in row_of})
        self.users_ = users
        self.edges_ = pd.DataFrame({"user": users[lower], "other": users[upper], "weight": weight})
        self.cliques_ = [tuple(sorted(int(users[u]) for u in group)) for group in groups]
        self.stats_ = {"users": len(users), "edges": len(lower),
                       "items_left_out_of_similarity": int((item_users > self.max_item_users).sum()),
                       "cliques": len(self.cliques_), "users_in_cliques": sum(map(len, self.cliques_)),
                       "mean_size": round(float(np.mean([len(c) for c in self.cliques_])), 2) if self.cliques_ else 0.0}
        log.info("user cliques: %s", self.stats_)
        return self

    @property
    def graph_(self) -> nx.Graph:
        """The mutual-kNN graph over user ids, built from `edges_` when asked: fit's own graph (over
        user rows) is let go when fit returns, since networkx's dicts for 800k users cost ~1 GiB."""
        graph = nx.Graph()
        graph.add_nodes_from(self.users_.tolist())
        graph.add_weighted_edges_from(zip(self.edges_["user"].tolist(), self.edges_["other"].tolist(),
                                          self.edges_["weight"].tolist()))
        return graph

    def _select(self, lower: np.ndarray, upper: np.ndarray, weight: np.ndarray, num_users: int,
                taken: set[int]) -> list[list[int]]:
        """Groups from the maximal cliques of the graph over user rows 0..num_users-1 with edges
        (lower[i], upper[i]) of weight[i], best mean weight first (module docstring, step 3)."""
        weights = dict(zip((lower * num_users + upper).tolist(), weight.tolist()))  # one entry per edge

        def between(u, v):
            return weights[u * num_users + v if u < v else v * num_users + u]

        def score(members):
            return float(np.mean([between(u, v) for i, u in enumerate(members) for v in members[i + 1:]]))

        def trimmed(members):
            members = list(members)
            while len(members) > self.max_size:  # drop the member least similar to the others
                strength = [sum(between(u, v) for v in members if v != u) for u in members]
                members.pop(int(np.argmin(strength)))
            return sorted(members)

        heap = []
        for clique in maximal_cliques(lower, upper, num_users):
            if len(clique) >= self.min_size:
                members = trimmed(clique)
                heapq.heappush(heap, (-score(members), members))
        taken = set(taken)
        groups = []
        while heap:
            _, members = heapq.heappop(heap)
            free = [u for u in members if u not in taken]
            if len(free) == len(members):
                groups.append(members)
                taken.update(members)
            elif len(free) >= self.min_size:
                heapq.heappush(heap, (-score(free), free))
        return groups


def maximal_cliques(lower: np.ndarray, upper: np.ndarray, num_nodes: int):
    """The maximal cliques of the undirected graph over nodes 0..num_nodes-1 with edges (lower[i],
    upper[i]), each once: Bron-Kerbosch with Tomita's pivot (the candidate with the most candidate
    neighbours), the search networkx's find_cliques runs, over plain sets instead of a networkx
    graph (a dict per node and per edge: ~1 GiB for the 800k users of a 1M-user night; here an
    isolated node shares one empty set). The sets are built and visited in the order networkx
    builds and visits its own (nodes in order, each node's neighbours in edge order), so the
    cliques and the order of their members are networkx's: a clique's member order breaks ties
    when it is trimmed to `max_size`, so this keeps every synthesized user of the networkx version
    (tests/test_cliques.py compares the two)."""
    no_neighbours: frozenset = frozenset()
    adjacency: list = [no_neighbours] * num_nodes
    for u, v in zip(lower.tolist(), upper.tolist()):
        for a, b in ((u, v), (v, u)):
            if adjacency[a] is no_neighbours:
                adjacency[a] = set()
            adjacency[a].add(b)

    def expand(clique, within, candidates):
        pivot = max(within, key=lambda node: len(candidates & adjacency[node]))
        for_pivot = candidates - adjacency[pivot]
        while for_pivot:
            node = for_pivot.pop()
            candidates.remove(node)
            clique.append(node)
            neighbours = adjacency[node]
            within_node = within & neighbours
            if not within_node:
                yield clique[:]
            else:
                candidates_node = candidates & neighbours
                if candidates_node:
                    yield from expand(clique, within_node, candidates_node)
            clique.pop()

    if num_nodes:
        everyone = set(range(num_nodes))
        yield from expand([], everyone.copy(), everyone)
