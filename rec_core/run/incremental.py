"""Incremental nights: what a run takes over from the run before it (`previous_run`).

A run with `previous_run=<run id>` or `previous_run=latest` (the run `<output_dir>/latest` points
at) is an *incremental* night unless one of these makes it a full run, whose reason the manifest
records (`incremental.reason`): nothing is published yet (the first night), `incremental.full_retrain`
is set, it is the `incremental.full_retrain_every`-th night since the last full one, or the previous
run was made with other settings in REUSE_SECTIONS (another data set or split, other semantic or
crowd settings, another LLM). The plan is made once, when the run starts, and kept in the manifest,
so a resumed night reuses the same previous run even after `latest` moved.

What an incremental night takes over, always matched through source ids (dense ids are renumbered
by every ingest, and new items or users shift them):
- semantic and crowd_semantic: a history (a user's latest items, a synthesized user's items) whose
  items, texts and labels are exactly the previous run's keeps the previous clusters, with either
  backend (`history_keys`); only the other histories are grouped, so with the llm backend only the
  changed users' prompts are sent.
- synthesize: a previous clique whose members are all training users with unchanged training
  histories keeps its synthesized user (its max-cover solution); the similarity graph is built over
  every training user as in a full run, new cliques are selected among the users outside the kept
  cliques only (the changed ones, those of cliques a change touched, those in no clique), and only
  those instances are solved. A kept clique is yesterday's choice and its instance's population
  term yesterday's: the partition drifts from what a full run would select, which is why every
  `full_retrain_every`-th night re-partitions everyone.
- train: a multi-interest model (MIND, ComiRec, REMI, SASRec) of the same name and architecture
  (jobs.train.ARCHITECTURE_KEYS) starts from the previous run's best weights: an item of both runs keeps its
  embedding row, a new item gets the random initialisation a full run gives it (the model's own
  initialiser, seeded), and it trains at most `incremental.epochs` epochs with the usual
  validation selection. LightGCN and the session models train from scratch.
Everything else (ingest, describe, distill, evaluate, export, report, publish) is recomputed; item
text embeddings and LLM answers come from the caches of output_dir in every run anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd

from rec_core.run.config import LATEST, ConfigError
from rec_core.run.directory import Run, differing_settings, read_run_table
from rec_core.storage.location import Location

log = logging.getLogger(__name__)

INCREMENTAL, FULL = "incremental", "full"
# the settings a previous run must share for anything of it to be taken over
REUSE_SECTIONS = ("data", "split", "semantic", "crowd", "llm.model", "llm.max_tokens", "llm.temperature",
                  "llm.max_model_len")


def plan_night(run: Run) -> dict:
    """The run's plan (manifest `incremental`): mode full / incremental, why, and the previous run."""
    if "incremental" in run.manifest:
        return run.manifest["incremental"]
    config = run.config
    previous = resolve_previous_run(Location.of(config["output_dir"]), config["previous_run"], run.root)
    plan = {"mode": FULL, "previous_run": None, "previous_root": None, "nights_since_full": 0}
    if previous is None:
        plan["reason"] = ("no previous_run" if config["previous_run"] is None
                          else "nothing published yet: the first night")
    else:
        before = json.loads((previous / "manifest.json").read_text())
        since = before.get("incremental", {}).get("nights_since_full", 0) + 1
        differing = differing_settings(before["config"], config, REUSE_SECTIONS)
        every = config["incremental"]["full_retrain_every"]
        plan.update(previous_run=previous.name, previous_root=str(previous))
        if config["incremental"]["full_retrain"]:
            plan["reason"] = "incremental.full_retrain requested"
        elif every and since >= every:
            plan["reason"] = f"night {since} since the last full run (incremental.full_retrain_every={every})"
        elif differing:
            plan["reason"] = f"the previous run has other {', '.join(differing)} settings"
        else:
            plan.update(mode=INCREMENTAL, reason="reuses what did not change", nights_since_full=since)
    run.manifest["incremental"] = plan
    run.save_manifest()
    log.info("night plan: %s run (%s)%s", plan["mode"], plan["reason"],
             f", previous run {plan['previous_run']}" if plan["previous_run"] else "")
    return plan


def resolve_previous_run(output_dir: Location, previous_run: str | None, this_root: Location) -> Location | None:
    """The folder of `previous_run` ('latest': the published run, None before the first publication)."""
    from rec_core.run.publish import published_run  # publish imports this package's directory module

    if previous_run is None:
        return None
    if previous_run == LATEST:
        folder = published_run(output_dir)
        if folder is None:
            return None
    else:
        folder = output_dir / previous_run
        if not (folder / "manifest.json").is_file():
            raise ConfigError(f"previous_run={previous_run}: no run {folder} (a run id of {output_dir}, or "
                              f"'{LATEST}')")
    if folder == this_root:
        raise ConfigError(f"previous_run={previous_run} is this run ({this_root}): a night starts from another run")
    return folder


def previous_root(run: Run) -> Location | None:
    """The previous run's folder when this night is incremental, else None (a full run)."""
    plan = plan_night(run) if run.config.get("previous_run") is not None else run.manifest.get("incremental")
    return Location.of(plan["previous_root"]) if plan and plan["mode"] == INCREMENTAL else None


# ------------------------------------------------------------------------------ ids across runs


def item_rows(previous: Location, items: pd.DataFrame) -> np.ndarray:
    """For each item of this run (dense id order), its dense id in the previous run, -1 if new."""
    before = read_run_table(previous, "items")
    index = pd.Series(before["item_id"].to_numpy(), index=before["source_id"].astype(str))
    return index.reindex(items["source_id"].astype(str)).fillna(-1).to_numpy(np.int64)


def items_now(previous: Location, items: pd.DataFrame) -> np.ndarray:
    """For each item of the previous run (its dense id order), its dense id in this run, -1 if gone."""
    before = read_run_table(previous, "items")
    index = pd.Series(items["item_id"].to_numpy(), index=items["source_id"].astype(str))
    return index.reindex(before["source_id"].astype(str)).fillna(-1).to_numpy(np.int64)


def history_keys(items: pd.DataFrame, histories: dict[int, list[int]]) -> dict[int, str]:
    """history id -> what a grouping of its items depends on: the sha256 of the JSON list of
    [source id, text, sorted labels] of its items, in order (each item's JSON is made once)."""
    per_item = [json.dumps([str(s), str(t), sorted(map(str, labels))])
                for s, t, labels in zip(items["source_id"], items["text"], items["labels"])]
    return {history: hashlib.sha256(("[" + ", ".join(per_item[i] for i in item_ids) + "]").encode()).hexdigest()
            for history, item_ids in histories.items()}


def reusable_groupings(previous: Location, table_name: str, id_column: str, keys: dict[int, str],
                       items: pd.DataFrame) -> pd.DataFrame:
    """The previous run's rows of `table_name` for the histories (id -> history key) whose key it
    grouped too, with this run's ids; histories without a match are left for grouping."""
    try:
        before = read_run_table(previous, table_name)
    except FileNotFoundError:
        return pd.DataFrame()
    if "input_key" not in before.columns or not keys:
        return pd.DataFrame()
    # one previous history per key, and the histories of this run that have one of those keys
    first = before.drop_duplicates(id_column).drop_duplicates("input_key").set_index("input_key")[id_column]
    wanted = pd.Series(list(keys.values()), index=list(keys.keys()))
    wanted = wanted[wanted.isin(first.index)]
    pairs = pd.DataFrame({"previous_id": first.reindex(wanted.to_numpy()).to_numpy(), "new_id": wanted.index})
    taken = before.merge(pairs, left_on=id_column, right_on="previous_id")
    to_now = items_now(previous, items)  # no item is gone (-1) here: the keys name the items
    taken["item_ids"] = [to_now[np.asarray(ids, np.int64)].tolist() for ids in taken["item_ids"]]
    taken[id_column] = taken.pop("new_id")
    return taken.drop(columns="previous_id").reset_index(drop=True)


def training_histories(users: pd.DataFrame, items: pd.DataFrame, interactions: pd.DataFrame,
                       user_splits: pd.DataFrame) -> pd.Series:
    """source user id -> sha256 of the source ids of the user's interactions, for training users."""
    train = user_splits.loc[user_splits["split"] == "train", "user_id"]
    frame = interactions[interactions["user_id"].isin(train)]
    item_sources = items["source_id"].astype(str).to_numpy()[frame["item_id"].to_numpy()]
    user_sources = users.set_index("user_id")["source_id"].astype(str)
    joined = pd.DataFrame({"user": frame["user_id"].to_numpy(), "item": item_sources})
    digests = joined.groupby("user", sort=True)["item"].agg(
        lambda s: hashlib.sha256("\x1f".join(s).encode()).hexdigest())
    return pd.Series(digests.to_numpy(), index=user_sources.reindex(digests.index).to_numpy())


def unchanged_training_users(previous: Location, run: Run) -> dict[str, int]:
    """source id -> this run's dense id of every training user whose training interactions (items, in
    order) are exactly those of the previous run, where it was a training user too."""
    names = ("users", "items", "interactions", "user_splits")
    tables = [run.read_table(name) for name in names]
    now = training_histories(*tables)
    before = training_histories(*(read_run_table(previous, name) for name in names))
    common = now.index.intersection(before.index)
    same = common[now[common].to_numpy() == before[common].to_numpy()]
    dense = pd.Series(tables[0]["user_id"].to_numpy(), index=tables[0]["source_id"].astype(str))
    return {str(source): int(dense[source]) for source in same}


def kept_synthesized_users(previous: Location, run: Run) -> tuple[pd.DataFrame, int]:
    """The previous run's synthesized users whose cliques have only unchanged training users, with
    this run's user and item ids (in their previous order), and how many previous cliques were dropped."""
    try:
        before = read_run_table(previous, "synthesized_users").sort_values("synth_id")
    except FileNotFoundError:
        return pd.DataFrame(), 0
    unchanged = unchanged_training_users(previous, run)
    user_sources = read_run_table(previous, "users").set_index("user_id")["source_id"].astype(str)
    to_now = items_now(previous, run.read_table("items"))
    kept = []
    for row in before.itertuples(index=False):
        members = [unchanged.get(user_sources[int(m)]) for m in row.member_ids]
        chosen = to_now[np.asarray(row.item_ids, np.int64)]
        if None in members or (chosen < 0).any():
            continue
        kept.append({**row._asdict(), "member_ids": members, "item_ids": chosen.tolist()})
    return pd.DataFrame(kept, columns=before.columns), len(before) - len(kept)

