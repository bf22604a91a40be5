"""Incremental nights (rec_core.run.incremental): the plan, what is taken over through source ids, the
warm start; and, with real Ray on ML-100K, a night after 2% of the users got a new interaction."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from rec_core.run.config import ConfigError, load_config
from rec_core.run.directory import Run
from rec_core.run.incremental import (FULL, INCREMENTAL, history_keys, kept_synthesized_users, plan_night,
                                      reusable_groupings, unchanged_training_users)


def night(output_dir, run_id, *overrides):
    return Run(load_config(None, [f"output_dir={output_dir}", f"run_id={run_id}", "previous_run=latest", *overrides]))


def publish_by_hand(run):
    from jobs.publish import publish

    run.write_table("metrics", pd.DataFrame([{"model": "popularity", "split": "valid", "metric": "recall", "k": 50,
                                              "value": 0.2}]))
    for stage in ("evaluate", "export"):
        with run.stage(stage):
            pass
    publish(run)


def test_the_plan_of_a_night(tmp_path):
    first = night(tmp_path, "n1")
    assert plan_night(first)["mode"] == FULL and "first night" in plan_night(first)["reason"]
    publish_by_hand(first)
    second = night(tmp_path, "n2", "incremental.full_retrain_every=3")
    plan = plan_night(second)
    assert (plan["mode"], plan["previous_run"], plan["nights_since_full"]) == (INCREMENTAL, "n1", 1)
    publish_by_hand(second)
    assert plan_night(night(tmp_path, "n3", "incremental.full_retrain_every=3"))["mode"] == INCREMENTAL
    fourth = night(tmp_path, "n4", "incremental.full_retrain_every=2")  # n2 was night 1 since the full n1
    assert plan_night(fourth)["mode"] == FULL and "full_retrain_every=2" in plan_night(fourth)["reason"]
    asked = night(tmp_path, "n5", "incremental.full_retrain=true")
    assert plan_night(asked)["reason"] == "incremental.full_retrain requested"
    other = night(tmp_path, "n6", "semantic.max_items=7")
    assert plan_night(other)["mode"] == FULL and "semantic" in plan_night(other)["reason"]
    by_id = Run(load_config(None, [f"output_dir={tmp_path}", "run_id=n7", "previous_run=n1"]))
    assert plan_night(by_id)["previous_run"] == "n1"
    with pytest.raises(ConfigError, match="no run .*nope"):
        plan_night(Run(load_config(None, [f"output_dir={tmp_path}", "run_id=n8", "previous_run=nope"])))
    # the plan is kept: a resumed night uses the same previous run after `latest` moved
    assert json.loads((second.root / "manifest.json").read_text())["incremental"]["previous_run"] == "n1"
    assert plan_night(night(tmp_path, "n2", "incremental.full_retrain_every=3"))["previous_run"] == "n1"


def items_table(sources, texts=None):
    return pd.DataFrame({"item_id": np.arange(len(sources)), "source_id": sources,
                         "title": texts or [f"title {s}" for s in sources],
                         "text": texts or [f"title {s}" for s in sources], "labels": [["Drama"]] * len(sources)})


def test_groupings_are_taken_over_through_source_ids_when_their_items_are_unchanged(tmp_path):
    before = Run(load_config(None, [f"output_dir={tmp_path}", "run_id=before"]))
    old_items = items_table(["a", "b", "c", "d"])
    before.write_table("items", old_items)
    keys = history_keys(old_items, {7: [0, 1, 2], 8: [2, 3]})
    before.write_table("user_semantic_clusters", pd.DataFrame([
        {"user_id": 7, "cluster": 0, "name": "x", "item_ids": [0, 2], "status": "ok", "input_key": keys[7]},
        {"user_id": 7, "cluster": 1, "name": "y", "item_ids": [1], "status": "ok", "input_key": keys[7]},
        {"user_id": 8, "cluster": 0, "name": "z", "item_ids": [2, 3], "status": "ok", "input_key": keys[8]}]))
    # today: a new item first (every dense id shifts), item d retitled
    new_items = items_table(["new", "a", "b", "c", "d"], ["title new", "title a", "title b", "title c", "renamed d"])
    today = history_keys(new_items, {3: [1, 2, 3], 4: [3, 4]})
    assert today[3] == keys[7] and today[4] != keys[8]  # same items and texts; a changed text
    taken = reusable_groupings(before.root, "user_semantic_clusters", "user_id", today, new_items)
    assert taken[["user_id", "cluster", "name"]].values.tolist() == [[3, 0, "x"], [3, 1, "y"]]
    assert taken["item_ids"].tolist() == [[1, 3], [2]]  # a, c and b under today's ids


def training_tables(histories: dict[str, list[str]], items: list[str], splits: dict[str, str]):
    users = pd.DataFrame({"user_id": np.arange(len(histories)), "source_id": list(histories)})
    index = {s: i for i, s in enumerate(items)}
    rows = [(u, index[i]) for u, (_, seq) in enumerate(histories.items()) for i in seq]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(ts=0)
    user_splits = pd.DataFrame({"user_id": users["user_id"], "split": [splits.get(s, "train") for s in histories]})
    return users, items_table(items), interactions, user_splits


def write_tables(run, tables):
    for name, table in zip(("users", "items", "interactions", "user_splits"), tables):
        run.write_table(name, table)


def test_cliques_are_kept_only_when_every_member_is_unchanged(tmp_path):
    before = Run(load_config(None, [f"output_dir={tmp_path}", "run_id=before"]))
    write_tables(before, training_tables({"u1": ["a", "b"], "u2": ["b", "c"], "u3": ["a", "c"], "u4": ["c", "d"],
                                          "u5": ["a", "d"]}, ["a", "b", "c", "d"], {}))
    before.write_table("synthesized_users", pd.DataFrame(
        [{"synth_id": 0, "member_ids": [0, 1, 2], "item_ids": [0, 1], "objective": 3.0},
         {"synth_id": 1, "member_ids": [3, 4], "item_ids": [3], "objective": 2.0}]))
    today = Run(load_config(None, [f"output_dir={tmp_path}", "run_id=today"]))
    # a new user and a new item first (ids shift); u4 has a new interaction; u5 is now a test user
    write_tables(today, training_tables({"u0": ["z"], "u1": ["a", "b"], "u2": ["b", "c"], "u3": ["a", "c"],
                                         "u4": ["c", "d", "a"], "u5": ["a", "d"]}, ["z", "a", "b", "c", "d"],
                                        {"u5": "test"}))
    assert unchanged_training_users(before.root, today) == {"u1": 1, "u2": 2, "u3": 3}
    kept, dropped = kept_synthesized_users(before.root, today)
    assert kept["member_ids"].tolist() == [[1, 2, 3]] and kept["item_ids"].tolist() == [[1, 2]] and dropped == 1


def test_taken_users_join_no_new_clique():
    from rec_core.crowd.cliques import UserCliques

    rng = np.random.default_rng(0)
    rows = [(u, i) for u in range(60) for i in rng.choice(30, 8, replace=False) + 30 * (u // 20)]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id"])
    model = UserCliques(neighbours=6, min_size=3, max_size=4)
    free = model.fit(interactions).cliques_
    assert free == UserCliques(neighbours=6, min_size=3, max_size=4).fit(interactions, taken=()).cliques_
    taken = set(free[0]) | set(free[1])
    constrained = UserCliques(neighbours=6, min_size=3, max_size=4).fit(interactions, taken=taken).cliques_
    assert constrained and not taken & {u for clique in constrained for u in clique}
    assert set(free[2:]) <= set(constrained)  # the groups a full selection adds after the taken ones


def test_a_warm_start_keeps_known_items_rows_and_initialises_new_items_as_a_full_run():
    from rec_core.train.recipe import warm_started

    fresh = {"item_embedding.weight": torch.full((5, 2), 9.0), "w": torch.zeros(3)}  # 4 items + padding
    previous = {"item_embedding.weight": torch.arange(8.0).reshape(4, 2), "w": torch.ones(3)}  # 3 items + padding
    state = warm_started(fresh, previous, np.array([2, -1, 0, 1]))
    assert state["item_embedding.weight"].tolist() == [[4, 5], [9, 9], [0, 1], [2, 3], [6, 7]]
    assert state["w"].tolist() == [1, 1, 1]


@pytest.mark.integration
def test_an_incremental_night_on_ml100k_regroups_only_changed_users_and_warm_starts(data_dir, tmp_path,
                                                                                    shared_text_cache):
    ray = pytest.importorskip("ray")
    from jobs.benchmarks.incremental import yesterday
    from jobs.ingest import ingest
    from jobs.refresh import refresh
    from jobs.semantic import semantic
    from rec_core.data.datasets import load_dataset, write_generic

    tables = load_dataset("movielens-100k", data_dir)
    before, changed = yesterday(tables.interactions, 0.02, seed=1)
    folder = tmp_path / "data"
    quick = ["data.dataset=generic", f"data.path={folder}", "models=[comirec_sa+align+contrast]",
             "train.epochs=2", "incremental.epochs=1", "train.max_samples_per_epoch=2000", "train.cpus_per_worker=1",
             "train.embedding_dim=16", shared_text_cache, f"output_dir={tmp_path / 'runs'}", "previous_run=latest"]
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        write_generic(tables.items, before, tables.users, folder)
        first = refresh(load_config(None, [*quick, "run_id=night-1"]))
        write_generic(tables.items, tables.interactions, tables.users, folder)
        second = refresh(load_config(None, [*quick, "run_id=night-2"]))
    finally:
        ray.shutdown()
    full = Run(load_config(None, [*quick[:-2], f"output_dir={tmp_path / 'full'}", "run_id=full-2"]))
    ingest(full)
    semantic(full)

    stages = second.manifest["stages"]
    assert second.manifest["incremental"]["mode"] == INCREMENTAL
    users = second.read_table("users").set_index("source_id")["user_id"]
    changed = set(users[tables.users.set_index("user_id").loc[changed, "source_id"].astype(str)].tolist())
    changed_train = changed & set(second.read_table("user_splits").query("split == 'train'")["user_id"])
    assert stages["semantic"]["histories"]["grouped"] == len(changed_train)  # every other user kept
    # what was kept and what was regrouped is what a full run computes from today's data
    columns = ["user_id", "cluster", "name", "item_ids", "status", "input_key"]
    ours, theirs = second.read_table("user_semantic_clusters")[columns], full.read_table("user_semantic_clusters")[columns]
    assert ours.map(str).equals(theirs.map(str))
    cliques = second.read_table("synthesized_users")
    kept = stages["synthesize"]["cliques"]["kept_from_previous_run"]
    assert kept > 0 and not changed & {u for m in cliques["member_ids"][:kept] for u in m}
    assert len(cliques) <= len(first.read_table("synthesized_users")) + len(changed)
    record = stages["train:comirec_sa+align+contrast"]
    assert record["start"] == "warm start from night-1" and record["epochs"] <= 1
    assert first.manifest["stages"]["train:comirec_sa+align+contrast"]["start"] == "full run"
