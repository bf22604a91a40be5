"""Stage 1, ingest: load the configured data set into canonical Parquet tables and split users.

Writes items, users, interactions, user_splits (ComiRec protocol) and, for session data,
sessions and session_splits (ALKDRec protocol)."""

from __future__ import annotations

import logging

import numpy as np

from rec_core.data.datasets import DataError, load_dataset
from rec_core.data.splits import history_cuts, sequences_for, split_sessions, split_users
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run

log = logging.getLogger(__name__)


def timestamp_ties(interactions, user_splits, history_fraction: float) -> dict:
    """How much the data's timestamps tie, and for how many valid/test users the history cut was
    moved off a tie (rec_core.data.splits), so the manifest says what the protocol did. The
    interactions are sorted by user, then time (every loader's tables are), so a tie is a run of
    neighbouring rows: compared in place, no hash table of every (user, time) pair."""
    users, times = interactions["user_id"].to_numpy(), interactions["ts"].to_numpy()
    same = (users[1:] == users[:-1]) & (times[1:] == times[:-1])  # row i + 1 ties with row i
    tied = np.zeros(len(users), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    evaluated = sequences_for(interactions, user_splits.loc[user_splits["split"] != "train", "user_id"].to_numpy())
    moved = history_cuts(evaluated.offsets, history_fraction, evaluated.times) != history_cuts(evaluated.offsets,
                                                                                                  history_fraction)
    return {"interactions_sharing_a_timestamp": int(tied.sum()), "share": round(float(tied.mean()), 4),
            "eval_users_cut_moved_off_a_tie": int(moved.sum()), "eval_users": len(evaluated)}


def check_evaluable(num_items: int, eval_config: dict, dataset: str) -> None:
    """Top-K lists need a catalogue of at least K items."""
    needed = max(eval_config["top_k"], *eval_config["ks"])
    if num_items < needed:
        raise DataError(f"{dataset}: the catalogue has {num_items} items, fewer than the {needed} that eval.top_k="
                        f"{eval_config['top_k']} / eval.ks={list(eval_config['ks'])} rank; lower them")


def ingest(run: Run) -> None:
    data, split = run.config["data"], run.config["split"]
    with run.stage("ingest") as info:
        tables = load_dataset(data["dataset"], data["data_dir"], data["path"], data["k_core"],
                              data["unknown_items"], data["ml1m_ratings"])
        check_evaluable(tables.num_items, run.config["eval"], data["dataset"])
        user_splits, split_skips = split_users(tables.interactions, split["ratios"], split["seed"])
        empty = [name for name in ("train", "valid", "test") if not (user_splits["split"] == name).any()]
        if empty:
            raise DataError(f"{data['dataset']}: {len(user_splits)} users can be split (at least 2 interactions "
                            f"each; {split_skips['users_too_short_to_split']} skipped as shorter), which leaves "
                            f"the {' and '.join(empty)} split(s) empty under split.ratios={list(split['ratios'])}: "
                            "the data need more users with histories, or other ratios")
        rows = {"items": run.write_table("items", tables.items),
                "users": run.write_table("users", tables.users),
                "interactions": run.write_table("interactions", tables.interactions),
                "user_splits": run.write_table("user_splits", user_splits)}
        if tables.sessions is not None:
            rows["sessions"] = run.write_table("sessions", tables.sessions)
            session_splits = split_sessions(tables.sessions, split["session_ratios"], split["seed"],
                                             split["session_max_prefix"])
            rows["session_splits"] = run.write_table("session_splits", session_splits)
        for name in ("train", "valid", "test"):
            rows[f"users_{name}"] = int((user_splits["split"] == name).sum())
        info["rows"] = rows
        info["skips"] = {**tables.skips, **split_skips}
        info["timestamps"] = timestamp_ties(tables.interactions, user_splits, split["history_fraction"])
        info["data_sha256"] = run.record_data(tables.source_files)["sha256"]
        log.info("ingest: %s; skipped: %s", rows, info["skips"])


def main(argv=None) -> None:
    main_guard(lambda config: ingest(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
