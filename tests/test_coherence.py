import numpy as np
import pytest

from rec_core.interests.coherence import coherence

LABELS = {1: frozenset({"drama"}), 2: frozenset({"drama", "war"}), 3: frozenset({"comedy"}),
          4: frozenset({"comedy"}), 5: frozenset(), 6: frozenset({"war"})}


def test_hand_computed_coherence():
    # pairs: (1,2) share drama, (3,4) share comedy, (3,5) no, (4,5) no -> 2 / 4
    result = coherence([[[1, 2], [3, 4, 5]]], LABELS, draws=1)
    assert result["coherence"] == pytest.approx(0.5) and result["pairs"] == 4


def test_grouping_by_label_beats_random_and_random_matches_baseline():
    by_genre = [[[1, 2, 6], [3, 4]]]
    scrambled = [[[1, 3, 6], [2, 4]]]
    good = coherence(by_genre, LABELS, draws=200)
    bad = coherence(scrambled, LABELS, draws=200)
    assert good["coherence"] > good["random_baseline"] + 0.3
    assert bad["coherence"] < bad["random_baseline"]
    # both groupings have the same sizes and items, so the same random baseline (up to sampling)
    assert good["random_baseline"] == pytest.approx(bad["random_baseline"], abs=0.05)


def test_singletons_have_no_pairs():
    assert coherence([[[1], [2]]], LABELS)["pairs"] == 0


def test_a_capped_diagnostic_reads_a_seeded_sample_and_is_unchanged_under_the_cap():
    groupings = [[[1, 2], [3, 4, 5]], [[1, 3], [2, 6]], [[4, 5, 6]], [[1, 2, 6]], [[3], [4]]] * 40
    whole = coherence(groupings, LABELS, draws=3, seed=1)
    assert coherence(groupings, LABELS, draws=3, seed=1, max_users=200) == whole  # 200 histories: no sample
    sampled = coherence(groupings, LABELS, draws=3, seed=1, max_users=50)
    assert sampled["users"] == 50 and sampled["sampled_from"] == 200
    assert sampled == coherence(groupings, LABELS, draws=3, seed=1, max_users=50)  # seeded
    assert sampled["coherence"] == pytest.approx(whole["coherence"], abs=0.15)


def test_groupings_built_on_read_equal_the_lists_and_their_coherence():
    """jobs.semantic.Groupings (each id's clusters built when read, from a clusters table's columns)
    gives the lists the stage built before it, and the same coherence, sampled or not."""
    import pandas as pd
    import pyarrow as pa

    from jobs.semantic import Groupings

    rng = np.random.default_rng(0)
    ids = np.sort(rng.integers(0, 300, 1000))
    items = pd.Series([rng.integers(0, 50, rng.integers(1, 5)).tolist() for _ in ids])
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    clusters = [list(members) for members in items]
    lists = [clusters[a:b] for a, b in zip(starts, np.r_[starts[1:], len(ids)])]
    groupings = Groupings(ids, pa.chunked_array([pa.array(items.iloc[:400].tolist()), pa.array(items.iloc[400:].tolist())]))
    assert len(groupings) == len(lists) and list(groupings) == lists and groupings[-1] == lists[-1]
    labels = {item: frozenset([item % 7]) for item in range(50)}
    for max_users in (None, 50):
        assert coherence(groupings, labels, seed=3, max_users=max_users) == \
            coherence(lists, labels, seed=3, max_users=max_users)
    assert list(Groupings(np.zeros(0, np.int64), pa.chunked_array([], pa.list_(pa.int64())))) == []
