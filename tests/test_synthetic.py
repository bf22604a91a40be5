"""The synthetic data generator (rec_core.data.synthetic, jobs.synthetic) of the scale benchmark."""

import json

import pandas as pd

from rec_core.data.datasets import load_dataset, write_generic
from rec_core.data.synthetic import synthetic_tables


def test_seeded_tables_are_identical_and_a_seed_changes_them():
    first = synthetic_tables(users=500, seed=3)
    again = synthetic_tables(users=500, seed=3)
    other = synthetic_tables(users=500, seed=4)
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b)
    assert not first[2].equals(other[2])


def test_histories_are_distinct_items_in_time_order_drawn_from_few_topics():
    items, users, interactions = synthetic_tables(users=2000, topics=30, seed=0)
    assert len(users) == 2000 and interactions["user_id"].nunique() >= 1990  # a user may lose no whole history
    assert not interactions.duplicated(["user_id", "item_id"]).any()
    assert interactions.groupby("user_id")["ts"].apply(lambda ts: ts.is_monotonic_increasing and ts.is_unique).all()
    assert interactions["item_id"].between(0, len(items) - 1).all()
    topic = items["labels"].map(lambda labels: labels[-1]).to_numpy()
    per_user = pd.Series(topic[interactions["item_id"]]).groupby(interactions["user_id"].to_numpy()).nunique()
    assert per_user.max() <= 4  # max_user_topics
    counts = interactions.groupby("user_id").size()
    assert counts.max() > 5 * counts.median()  # a long tail of history lengths
    popularity = interactions["item_id"].value_counts()
    assert popularity.iloc[: len(items) // 100].sum() > 0.03 * len(interactions)  # long-tailed popularity
    assert items["text"].str.contains(" - ").all() and items["title"].str.len().gt(5).all()


def test_written_data_loads_back_through_the_generic_loader(tmp_path):
    items, users, interactions = synthetic_tables(users=300, seed=1)
    write_generic(items, interactions, users, tmp_path, chunk_rows=500)  # several chunks
    tables = load_dataset("generic", path=str(tmp_path))
    assert len(tables.interactions) == len(interactions) and len(tables.items) == len(items)
    back = pd.DataFrame({"user": tables.users["source_id"].to_numpy()[tables.interactions["user_id"]],
                         "item": tables.items["source_id"].to_numpy()[tables.interactions["item_id"]],
                         "ts": tables.interactions["ts"].to_numpy()})
    drawn = pd.DataFrame({"user": users["source_id"].to_numpy()[interactions["user_id"]],
                          "item": items["source_id"].to_numpy()[interactions["item_id"]],
                          "ts": interactions["ts"].to_numpy()})
    key = ["user", "ts"]
    pd.testing.assert_frame_equal(back.sort_values(key, ignore_index=True), drawn.sort_values(key, ignore_index=True))
    assert tables.items["labels"].tolist() == items["labels"].tolist()


def test_the_command_writes_the_folder_and_prints_its_counts(tmp_path, capsys):
    from jobs.synthetic import main

    main(["--users", "200", "--out", str(tmp_path / "syn"), "--seed", "2"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["users"] == 200 and printed["items"] == 2000 and printed["interactions"] > 200
    assert (tmp_path / "syn" / "data.inter").read_text().count("\n") == printed["interactions"] + 1
