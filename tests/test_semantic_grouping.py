import numpy as np
import pandas as pd

from rec_core.interests.grouping import agglomerate


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


def test_user_budget_picks_the_same_users_whatever_the_split():
    from jobs.semantic import select_users

    users = np.arange(1, 201)
    split_a = pd.DataFrame({"user_id": users, "split": np.where(users % 5 == 0, "test", "train")})
    split_b = pd.DataFrame({"user_id": users[::-1], "split": np.where(users[::-1] % 7 == 0, "valid", "train")})
    chosen_a = select_users(split_a, 30, selection_seed=0)
    chosen_b = select_users(split_b, 30, selection_seed=0)
    assert len(chosen_a) == 30 and set(chosen_a) <= set(users[users % 5 != 0])
    # a user of lowest hash rank stays chosen in both splits where it is a training user in both
    both = set(chosen_a) & set(split_b.loc[split_b["split"] == "train", "user_id"])
    assert len(set(chosen_a) & set(chosen_b)) >= 0.6 * len(both)
    assert list(select_users(split_a, 30, selection_seed=0)) == list(chosen_a)
    assert set(select_users(split_a, 30, selection_seed=1)) != set(chosen_a)
    assert len(select_users(split_a, 0, selection_seed=0)) == 160
