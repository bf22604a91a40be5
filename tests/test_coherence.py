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
