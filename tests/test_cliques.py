"""User cliques on planted groups, and the max-cover instances built from them."""

import numpy as np
import pytest
import pandas as pd

from rec_core.crowd.cliques import UserCliques
from rec_core.crowd.max_cover import MaxCoverSolver, validate
from rec_core.crowd.synthesis import build_instances, item_label_sets, solve_chunk


def planted(groups=3, size=4, items_per_group=12, seed=0) -> pd.DataFrame:
    """Users of one group share most of their group's items; item 999 is engaged by everyone."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(groups):
        pool = np.arange(g * 100, g * 100 + items_per_group)
        for m in range(size):
            user = g * 10 + m
            rows += [(user, int(i)) for i in rng.choice(pool, size=9, replace=False)] + [(user, 999)]
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def test_planted_groups_are_found_as_cliques():
    interactions = planted()
    model = UserCliques(neighbours=3, min_similarity=0.1, min_shared_items=2, max_item_users=5,
                        min_size=3, max_size=4).fit(interactions)
    assert sorted(model.cliques_) == [(0, 1, 2, 3), (10, 11, 12, 13), (20, 21, 22, 23)]
    assert model.stats_["items_left_out_of_similarity"] == 1  # item 999: 12 users > 5
    for clique in model.cliques_:  # every group is a clique of the mutual-kNN graph
        assert all(model.graph_.has_edge(u, v) for i, u in enumerate(clique) for v in clique[i + 1:])
    assert max(dict(model.graph_.degree()).values()) <= 3


def test_a_repeated_interaction_counts_once():
    """The similarity is over binary user-item vectors: repeating interactions (a user who bought an
    item twice) changes no edge, weight or clique."""
    interactions = planted(groups=2, size=6, items_per_group=10, seed=3)
    settings = dict(neighbours=4, min_similarity=0.1, min_size=3, max_size=4)
    once = UserCliques(**settings).fit(interactions)
    repeated = UserCliques(**settings).fit(pd.concat([interactions, interactions.sample(frac=0.5, random_state=1),
                                                      interactions.head(7)], ignore_index=True))
    assert repeated.cliques_ == once.cliques_ and len(once.cliques_) >= 2
    pd.testing.assert_frame_equal(repeated.edges_, once.edges_)


def test_groups_are_disjoint_and_bounded_in_size():
    interactions = planted(groups=2, size=7, items_per_group=10)
    model = UserCliques(neighbours=6, min_similarity=0.1, min_size=3, max_size=4).fit(interactions)
    members = [u for clique in model.cliques_ for u in clique]
    assert len(members) == len(set(members))
    assert all(3 <= len(c) <= 4 for c in model.cliques_) and len(model.cliques_) >= 2
    # no group mixes the two planted groups
    assert all(len({u // 10 for u in clique}) == 1 for clique in model.cliques_)


def test_instances_weight_members_equally_and_solutions_cover_them():
    interactions = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 3], "item_id": [10, 11, 12, 11, 13, 11]})
    items = pd.DataFrame({"item_id": [10, 11, 12, 13],
                          "labels": [["drama"], ["comedy", "drama"], [], ["comedy"]]})
    labels = item_label_sets(items)
    assert labels[12] == ("item:12",)
    (instance,) = build_instances([(1, 2, 3)], interactions, labels, budget=1, member_items=50,
                                  population_weight=1.0)
    assert instance.items == (10, 11, 12, 13)
    # member 1: drama 2, comedy 1, item:12 1 of 4 label occurrences -> 500, 250, 250; member 2: comedy
    # 2/3, drama 1/3; member 3: comedy 1/2, drama 1/2; population (9 label occurrences): drama 4/9,
    # comedy 4/9, item:12 1/9. Every member weighs 1000, the population 999.
    assert sorted(instance.weights) == sorted([500, 250, 250, 667, 333, 500, 500, 444, 444, 111])
    (solution,) = solve_chunk([instance], MaxCoverSolver().config)
    assert validate(instance, solution) == []
    # the item all three share covers each member's comedy and drama and the population's: 3638
    assert solution.items(instance) == [11] and solution.objective == 250 + 500 + 667 + 333 + 1000 + 888


def test_cosine_counts_the_same_items_in_its_norms_as_in_its_dot_product():
    # users 0 and 1 share items 1 and 2; user 0 also has item 9, which too many users engaged with
    # to enter the similarity: over the kept items the two users are identical (cosine 1)
    rows = [(0, 1), (0, 2), (0, 9), (1, 1), (1, 2), (2, 1), (2, 2)] + [(u, 9) for u in range(3, 10)]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id"])
    model = UserCliques(neighbours=2, min_similarity=0.0, min_shared_items=2, max_item_users=5, min_size=3,
                        max_size=3).fit(interactions)
    assert model.graph_[0][1]["weight"] == pytest.approx(1.0)
    assert model.cliques_ == [(0, 1, 2)]


def test_maximal_cliques_are_networkx_find_cliques_in_its_order():
    """The clique search over plain sets yields what networkx's find_cliques yields on the same graph
    (nodes 0..n-1, then the edges in the same order): the same cliques, in the same order, each
    with its members in the same order (which breaks ties when a clique is trimmed), on random
    graphs dense and sparse, with isolated nodes."""
    import networkx as nx

    from rec_core.crowd.cliques import maximal_cliques

    rng = np.random.default_rng(0)
    for nodes, edges in ((12, 40), (60, 150), (300, 600), (40, 500), (5000, 8000)):
        pairs = list(dict.fromkeys(tuple(sorted(map(int, rng.choice(nodes, 2, replace=False)))) for _ in range(edges)))
        lower, upper = (np.array(side, dtype=np.int64) for side in zip(*pairs))
        graph = nx.Graph()
        graph.add_nodes_from(range(nodes))
        graph.add_edges_from(pairs)
        assert list(maximal_cliques(lower, upper, nodes)) == list(nx.find_cliques(graph))
