import numpy as np
import pandas as pd

from rec_core.data.splits import assign_splits, build_protocol, cut_history, sequences_for, split_sessions, split_users


def interactions(n_users=200, length=10):
    rows = [(u, (u * 7 + t) % 50, t) for u in range(n_users) for t in range(length if u else 1)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])


def test_user_split_is_seeded_disjoint_and_8_1_1():
    frame = interactions()
    first, skips = split_users(frame, seed=5)
    again, _ = split_users(frame, seed=5)
    other, _ = split_users(frame, seed=6)
    assert first.equals(again)
    assert not first["split"].equals(other["split"])
    assert skips == {"users_too_short_to_split": 1}  # user 0 has one interaction
    counts = first["split"].value_counts()
    assert (counts["valid"], counts["test"], counts["train"]) == (19, 19, 161)
    assert first["user_id"].is_unique and 0 not in set(first["user_id"])


def test_history_is_first_80_percent_and_targets_the_rest():
    frame = pd.DataFrame({"user_id": [3] * 5 + [4] * 2, "item_id": [9, 8, 7, 6, 5, 1, 2], "ts": range(7)})
    cut = cut_history(sequences_for(frame, np.array([3, 4])), 0.8)
    assert cut.histories.sequence(0).tolist() == [9, 8, 7, 6]
    assert cut.targets.sequence(0).tolist() == [5]
    assert cut.histories.sequence(1).tolist() == [1] and cut.targets.sequence(1).tolist() == [2]


def test_protocol_train_users_keep_whole_sequences():
    frame = interactions()
    splits, _ = split_users(frame, seed=1)
    data = build_protocol(frame, splits, num_items=50)
    assert len(data.train) + len(data.valid.user_ids) + len(data.test.user_ids) == 199
    assert np.diff(data.train.offsets).tolist() == [10] * len(data.train)
    assert not set(data.train.user_ids) & set(data.test.user_ids)


def test_assign_splits_sizes():
    labels = assign_splits(np.arange(10), (0.6, 0.2, 0.2), seed=0)
    assert sorted(labels.tolist()) == ["test"] * 2 + ["train"] * 6 + ["valid"] * 2


def test_session_split_target_is_last_and_prefix_truncated():
    rows = [(s, p, 100 * s + p) for s in range(20) for p in range(s % 3 + 12)]
    sessions = pd.DataFrame(rows, columns=["session_id", "pos", "item_id"]).sample(frac=1, random_state=0)
    table = split_sessions(sessions, seed=3, max_prefix=10)
    row = table.set_index("session_id").loc[4]  # 13 items: 400..412
    assert row["target"] == 412
    assert list(row["prefix"]) == list(range(402, 412))
    assert table["split"].value_counts().to_dict() == {"train": 12, "valid": 4, "test": 4}
    assert split_sessions(sessions, seed=3)["split"].equals(table["split"])


def history_cut(length, history_fraction, times=None):
    """The per-user cut `history_cuts` vectorised, kept here as its reference."""
    cut = min(max(int(length * history_fraction), 1), length - 1)
    if times is None or times[cut - 1] != times[cut]:
        return cut
    tied = times == times[cut]
    start, end = int(np.argmax(tied)), length - int(np.argmax(tied[::-1]))
    if start > 0:
        return start
    return end if end < length else cut


def test_vectorised_cuts_are_the_per_user_cuts():
    from rec_core.data.splits import history_cuts

    rng = np.random.default_rng(3)
    lengths = rng.integers(2, 30, size=3000)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    # few distinct timestamps per user, so many cuts fall inside ties (also ties spanning whole users)
    times = np.concatenate([np.sort(rng.integers(0, rng.integers(1, 6), size=n)) for n in lengths])
    for fraction in (0.8, 0.5, 0.34):
        expected = [history_cut(n, fraction, times[o:o + n]) for o, n in zip(offsets, lengths)]
        assert history_cuts(offsets, fraction, times).tolist() == expected
        assert history_cuts(offsets, fraction).tolist() == [history_cut(n, fraction) for n in lengths]
    moved = history_cuts(offsets, 0.8, times) != history_cuts(offsets, 0.8)
    assert 0.2 < moved.mean() < 0.9  # the inputs exercised the tie rules


def test_history_cut_never_falls_inside_equal_timestamps():
    from rec_core.data.splits import history_cuts

    for times in (None, np.arange(10), np.array([1, 2, 3, 4, 5, 6, 7, 7, 7, 8]), np.array([5] * 9 + [9]), np.full(10, 3)):
        assert history_cuts([0, 10], 0.8, times).tolist() == [history_cut(10, 0.8, times)]
    assert history_cut(10, 0.8) == 8
    assert history_cut(10, 0.8, np.arange(10)) == 8  # distinct times: the plain cut
    times = np.array([1, 2, 3, 4, 5, 6, 7, 7, 7, 8])  # position 8 sits in the tie 6..8
    assert history_cut(10, 0.8, times) == 6  # back to the start of the tie: history strictly earlier
    times = np.array([5, 5, 5, 5, 5, 5, 5, 5, 5, 9])  # the tie starts the sequence: forward to its end
    assert history_cut(10, 0.8, times) == 9
    assert history_cut(10, 0.8, np.full(10, 3)) == 8  # one timestamp for all: nothing to go by


def test_eval_histories_precede_their_targets_in_time():
    from rec_core.data.splits import build_protocol

    rng = np.random.default_rng(0)
    rows = [(u, int(i), int(t)) for u in range(60) for i, t in zip(rng.choice(200, 12, replace=False),
                                                                   np.sort(rng.integers(0, 5, 12)))]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    splits, _ = split_users(frame, seed=1)
    data = build_protocol(frame, splits, 200)
    when = {(u, i): t for u, i, t in rows}
    for eval_set in (data.valid, data.test):
        for row, user in enumerate(eval_set.user_ids):
            history = [when[(user, i)] for i in eval_set.histories.sequence(row)]
            targets = [when[(user, i)] for i in eval_set.targets.sequence(row)]
            if len(set(history + targets)) > 1:
                assert max(history) < min(targets), user


def test_timestamp_ties_counts_the_rows_that_share_a_users_timestamp_as_a_hash_of_pairs_would():
    from jobs.ingest import timestamp_ties

    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"user_id": rng.integers(0, 50, 3000), "item_id": rng.integers(0, 90, 3000),
                          "ts": rng.integers(0, 40, 3000)}).sort_values(["user_id", "ts"], kind="stable")
    splits = pd.DataFrame({"user_id": np.arange(50), "split": ["train", "valid", "test"] * 16 + ["train", "test"]})
    ties = timestamp_ties(frame.reset_index(drop=True), splits, 0.8)
    expected = frame.duplicated(["user_id", "ts"], keep=False)
    assert ties["interactions_sharing_a_timestamp"] == int(expected.sum()) > 0
    assert ties["share"] == round(float(expected.mean()), 4)
