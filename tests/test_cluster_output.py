"""Property tests: whatever the LLM writes, the result is failed or a valid partition of the items."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rec_core.llm.cluster_output import FAILED, OK, REPAIRED, validate_clusters

ITEMS = [101, 102, 103, 104, 105, 106]


def assert_partition(result, item_ids, max_clusters):
    assert result.status in (OK, REPAIRED)
    flat = [item for cluster in result.clusters for item in cluster]
    assert sorted(flat) == sorted(item_ids)  # every item exactly once, nothing invented
    assert 1 <= len(result.clusters) <= max_clusters
    assert all(result.clusters) and len(result.names) == len(result.clusters)
    assert all(name.strip() for name in result.names)


def test_clean_answer_is_ok():
    text = json.dumps({"clusters": [{"name": "thrillers", "items": [1, 3, 5]},
                                    {"name": "comedies", "items": [2, 4, 6]}]})
    result = validate_clusters(text, ITEMS, max_clusters=4)
    assert result.status == OK and result.repairs == []
    assert result.clusters == [[101, 103, 105], [102, 104, 106]]


@pytest.mark.parametrize("text,reason", [
    ("I think the user likes movies", "not JSON"),
    ('{"clusters": [{"name": "a", "items": [1, 2', "not JSON"),  # truncated
    ('["a", "b"]', "schema"),
    ('{"clusters": [{"name": "a", "items": [0, 9, "x"]}]}', "no valid item"),
])
def test_unrepairable_outputs_fail_with_reason(text, reason):
    result = validate_clusters(text, ITEMS, max_clusters=4)
    assert result.status == FAILED and reason in result.reason and result.clusters == []


def test_repairs_duplicates_out_of_range_and_leftovers():
    text = json.dumps({"clusters": [{"name": "a", "items": [1, 1, 2, 42]},
                                    {"name": "", "items": ["3", 2]},
                                    {"name": "empty", "items": []}]})
    result = validate_clusters(text, ITEMS, max_clusters=4)
    assert_partition(result, ITEMS, 4)
    assert result.status == REPAIRED
    assert result.clusters[:2] == [[101, 102], [103]]
    assert result.names == ["a", "interest 2", "other"] and result.clusters[2] == [104, 105, 106]


def test_leftovers_go_to_nearest_cluster_by_embedding():
    vectors = np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1], [1, 0], [0, 1]], dtype=float)
    text = json.dumps({"clusters": [{"name": "x", "items": [1]}, {"name": "y", "items": [2]}]})
    result = validate_clusters(text, ITEMS, max_clusters=4, item_vectors=vectors)
    assert result.clusters == [[101, 103, 105], [102, 104, 106]]


def test_every_item_alone_is_merged_down_to_the_bound():
    text = json.dumps({"clusters": [{"name": f"c{i}", "items": [i]} for i in range(1, 7)]})
    result = validate_clusters(text, ITEMS, max_clusters=3)
    assert_partition(result, ITEMS, 3)
    assert len(result.clusters) == 3


def test_all_items_in_one_cluster_is_valid():
    text = json.dumps({"clusters": [{"name": "everything", "items": list(range(1, 7))}]})
    result = validate_clusters(text, ITEMS, max_clusters=3)
    assert result.status == OK and result.clusters == [ITEMS]


item_value = st.one_of(st.integers(-3, 12), st.text(max_size=3), st.none(), st.booleans(),
                       st.floats(allow_nan=False, allow_infinity=False))
cluster = st.one_of(
    st.fixed_dictionaries({"name": st.one_of(st.text(max_size=10), st.none(), st.integers()),
                           "items": st.lists(item_value, max_size=10)}),
    st.integers(), st.text(max_size=5), st.fixed_dictionaries({"items": st.text(max_size=5)}))
answer = st.fixed_dictionaries({"clusters": st.lists(cluster, max_size=9)})


@settings(max_examples=300, deadline=None)
@given(answer=answer, max_clusters=st.integers(1, 5), with_vectors=st.booleans(),
       truncate=st.one_of(st.none(), st.integers(0, 200)))
def test_any_output_is_failed_or_a_valid_partition(answer, max_clusters, with_vectors, truncate):
    text = json.dumps(answer)
    if truncate is not None:
        text = text[:truncate]
    vectors = np.random.default_rng(0).normal(size=(len(ITEMS), 4)) if with_vectors else None
    result = validate_clusters(text, ITEMS, max_clusters, vectors)
    if result.status == FAILED:
        assert result.reason and not result.clusters
    else:
        assert_partition(result, ITEMS, max_clusters)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_arbitrary_text_never_raises(text):
    result = validate_clusters(text, ITEMS, max_clusters=3)
    assert result.status in (OK, REPAIRED, FAILED)
