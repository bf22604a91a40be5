import numpy as np

from rec_core.semantic_grouping import agglomerate


def blobs(sizes, dim=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[: len(sizes)]
    return np.concatenate([c + spread * rng.normal(size=(n, dim)) for c, n in zip(centres, sizes)])


def test_number_of_clusters_adapts_to_the_items():
    assert sorted(map(len, agglomerate(blobs([5]), 4, 0.5))) == [5]
    assert sorted(map(len, agglomerate(blobs([3, 4, 2]), 4, 0.5))) == [2, 3, 4]
    clusters = agglomerate(blobs([3, 4, 2]), 4, 0.5)
    assert sorted(p for c in clusters for p in c) == list(range(9))
    assert [0, 1, 2] in clusters and [3, 4, 5, 6] in clusters


def test_max_clusters_is_enforced_by_forced_merges():
    clusters = agglomerate(blobs([2, 2, 2, 2, 2]), 3, 0.5)
    assert len(clusters) == 3 and sorted(p for c in clusters for p in c) == list(range(10))


def test_single_item_and_empty():
    assert agglomerate(blobs([1]), 3, 0.5) == [[0]]
    assert agglomerate(np.zeros((0, 4)), 3, 0.5) == []
