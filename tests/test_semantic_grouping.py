from collections import Counter

import numpy as np
import pandas as pd
import pytest

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


def pairwise_loop_agglomerate(vectors, max_clusters, merge_threshold):
    """The pure-Python average-linkage loop `agglomerate` replaced, kept here as its reference."""
    n = len(vectors)
    if n == 0:
        return []
    unit = vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)
    similarity = unit @ unit.T
    clusters = [[i] for i in range(n)]
    while len(clusters) > 1:
        best, pair = -np.inf, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                linkage = similarity[np.ix_(clusters[a], clusters[b])].mean()
                if linkage > best:
                    best, pair = linkage, (a, b)
        if best < merge_threshold and len(clusters) <= max_clusters:
            break
        a, b = pair
        clusters[a] = sorted(clusters[a] + clusters.pop(b))
    return clusters


def test_scipy_linkage_gives_the_pairwise_loops_clusters_on_fixed_inputs():
    rng = np.random.default_rng(7)
    compared = Counter()
    for case in range(400):
        n, dim = int(rng.integers(1, 16)), int(rng.choice([4, 8, 32, 384]))
        if case % 2:  # a few themes with noise, like a user's items
            themes = rng.normal(size=(int(rng.integers(1, 5)), dim))
            vectors = themes[rng.integers(0, len(themes), n)] + rng.uniform(0.1, 1.0) * rng.normal(size=(n, dim))
        else:
            vectors = rng.normal(size=(n, dim))
        max_clusters, threshold = int(rng.integers(1, 6)), float(rng.uniform(-0.2, 0.8))
        expected = pairwise_loop_agglomerate(vectors, max_clusters, threshold)
        assert agglomerate(vectors, max_clusters, threshold) == expected, (case, n, dim, max_clusters, threshold)
        compared[len(expected)] += 1
    assert len(compared) >= 4  # the inputs reached several cluster counts, not only the trivial ones


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


@pytest.mark.integration
def test_the_distributed_grouping_writes_the_rows_of_the_in_process_one(local_ray, data_dir, tmp_path):
    """Real Ray Data actors over ML-100K's 943 users (batches of 100, 2 actors) against the driver."""
    import pyarrow.parquet as pq

    from jobs.semantic import clusters_table, encoder_rows, group_on_ray
    from rec_core.data.splits import recent_items
    from rec_core.data.datasets import load_dataset
    from rec_core.interests.grouping import EncoderGrouping
    from rec_core.run.incremental import history_keys

    tables = load_dataset("movielens-100k", data_dir)
    histories = recent_items(tables.interactions, tables.users["user_id"].to_numpy(), 15)
    grouping = EncoderGrouping(cache_dir=str(tmp_path)).fit(tables.items)
    here = pd.DataFrame(encoder_rows(grouping, histories.items()))
    # Arrow, in the actors' order
    distributed = group_on_ray(grouping, histories, workers=2, ray_settings={"dashboard": False}, batch_size=100)
    assert len(here) > 2 * len(histories) and distributed.num_rows == len(here)
    # the table the stage writes is the same from both (clusters_table: sorted, typed, input_key)
    keys = history_keys(tables.items, histories)
    written = clusters_table(pd.DataFrame(), distributed, "user_id", keys)
    assert written.equals(clusters_table(pd.DataFrame(), here, "user_id", keys))
    assert written.column("input_key").null_count == 0
    from rec_core.train.ray_train import load_clusters

    (tmp_path / "user_semantic_clusters").mkdir()
    pq.write_table(written, tmp_path / "user_semantic_clusters" / "part-0.parquet")
    assert load_clusters(tmp_path)[int(here["user_id"].iloc[0])] == [list(c) for c in here["item_ids"][
        here["user_id"] == here["user_id"].iloc[0]]]


def test_recent_items_are_each_users_latest_in_order_also_when_rows_interleave():
    from rec_core.data.splits import recent_items

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": rng.integers(0, 50, 2000), "item_id": rng.integers(0, 300, 2000)})
    users = np.arange(0, 50, 3)
    expected = {int(u): g["item_id"].to_numpy()[-7:].tolist() for u, g in frame[frame["user_id"].isin(users)]
                .groupby("user_id", sort=True)}
    assert recent_items(frame, users, 7) == expected and list(recent_items(frame, users, 7)) == list(expected)


def test_clusters_table_sorts_types_and_keys_the_rows_in_any_order():
    """The table a grouping stage writes does not depend on the order rows arrive in (the distributed
    grouping's blocks come in any order), the rows kept from a previous run included."""
    from jobs.semantic import clusters_table

    rng = np.random.default_rng(1)
    rows = [{"user_id": user, "cluster": cluster, "name": f"n{cluster}", "item_ids": [user, cluster], "status": "ok",
             "backend": "encoder", "cache_key": "", "detail": ""}
            for user in range(50) for cluster in range(int(rng.integers(1, 4)))]
    keys = {user: f"key {user}" for user in range(50)}
    table = clusters_table(pd.DataFrame(), rows, "user_id", keys)
    assert table.equals(clusters_table(pd.DataFrame(), [rows[i] for i in rng.permutation(len(rows))], "user_id", keys))
    kept = pd.DataFrame(rows[:10])  # a previous run's rows for the first users, then the new ones
    assert table.equals(clusters_table(kept, rows[10:][::-1], "user_id", keys))
    # crowd_semantic: the kept rows name their id synth_id, the new rows (ROW_COLUMNS) user_id
    synthesized = clusters_table(kept.rename(columns={"user_id": "synth_id"}).assign(input_key="old"),
                                 rows[10:], "synth_id", keys)
    assert synthesized.rename_columns(table.column_names).equals(table) and synthesized["synth_id"].null_count == 0
    frame = table.to_pandas()
    assert frame[["user_id", "cluster"]].equals(frame[["user_id", "cluster"]].sort_values(["user_id", "cluster"]))
    assert (frame["input_key"] == "key " + frame["user_id"].astype(str)).all()
    empty = clusters_table(pd.DataFrame(), [], "synth_id", {})
    assert empty.num_rows == 0 and empty.schema.names[0] == "synth_id" and empty.schema.field("item_ids").type == \
        table.schema.field("item_ids").type


def test_histories_read_as_the_dict_they_replace():
    from rec_core.data.splits import Histories

    plain = {9: [4, 1, 4], 2: [7], 5: [3, 8]}
    histories = Histories.of(plain)
    assert histories == plain and list(histories) == [2, 5, 9] and histories[9] == [4, 1, 4]
    assert list(histories.items()) == [(2, [7]), (5, [3, 8]), (9, [4, 1, 4])] and 5 in histories and 6 not in histories
    with pytest.raises(KeyError):
        histories[6]
    assert histories.without({5, 11}) == {2: [7], 9: [4, 1, 4]} and histories.without(set()) is histories
    assert histories.list_array(1).to_pylist() == [[3, 8], [4, 1, 4]]
    assert Histories.of({}) == {} and len(Histories.of({}).without({1})) == 0
