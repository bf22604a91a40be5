import pandas as pd
import pyarrow as pa
import pytest

from rec_core.llm.prompt_cache import PromptCache, prompt_key
from rec_core.storage.location import Location

PARAMS = {"temperature": 0.0, "max_tokens": 256}


def rows(prompts, model="m"):
    return pd.DataFrame({"key": [prompt_key(model, PARAMS, p) for p in prompts], "model": model,
                         "output": [f"answer to {p}" for p in prompts],
                         "num_input_tokens": 10, "num_generated_tokens": 5})


def test_key_depends_on_model_params_and_prompt():
    base = prompt_key("m", PARAMS, "p")
    assert base == prompt_key("m", dict(reversed(PARAMS.items())), "p")  # order of params is irrelevant
    assert len({base, prompt_key("m2", PARAMS, "p"), prompt_key("m", {**PARAMS, "temperature": 0.7}, "p"),
                prompt_key("m", PARAMS, "p ")}) == 4


def test_cache_is_shared_across_instances_and_only_misses_remain(tmp_path):
    first = PromptCache(tmp_path / "cache")
    assert first.add(rows(["a", "b", "c"])) == 3
    second = PromptCache(tmp_path / "cache")  # another run
    keys = [prompt_key("m", PARAMS, p) for p in ["a", "b", "c", "d"]]
    found = second.lookup(keys)
    assert set(found["key"]) == set(keys[:3])
    assert found.set_index("key").loc[keys[1], "output"] == "answer to b"
    misses = [k for k in keys if k not in set(found["key"])]
    assert misses == [keys[3]]
    second.add(rows(["d"]))
    assert len(PromptCache(tmp_path / "cache")) == 4 and len(second.parts()) == 2
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_empty_cache_lookup(tmp_path):
    assert PromptCache(tmp_path / "c").lookup(["x"]).empty


def test_a_truncated_or_altered_part_is_quarantined_and_the_rest_still_answers(tmp_path):
    """Real part files: one cut short, one with a flipped byte that Parquet itself would still read;
    both are moved to quarantine/ with a count, the third part's answers are still used, and only
    the bad parts' prompts are missing (so only they are sent again)."""
    cache = PromptCache(tmp_path / "cache")
    for batch in (["a", "b"], ["c"], ["d", "e"]):
        cache.add(rows(batch))
    import pyarrow.parquet as pq
    by_content = {tuple(pq.read_table(part).column("output").to_pylist()): part for part in cache.parts()}
    truncated, altered, intact = (by_content[("answer to a", "answer to b")], by_content[("answer to c",)],
                                  by_content[("answer to d", "answer to e")])
    truncated.write_bytes(truncated.read_bytes()[:-40])
    data = bytearray(altered.read_bytes())
    position = bytes(data).index(b"answer to c") + len("answer to ")
    data[position] = ord("X")  # the cached answer now reads "answer to X": only the checksum can tell
    altered.write_bytes(bytes(data))
    assert pq.read_table(altered).column("output").to_pylist() == ["answer to X"]

    reader = PromptCache(tmp_path / "cache")
    keys = [prompt_key("m", PARAMS, p) for p in "abcde"]
    found = reader.lookup(keys)
    assert sorted(found["output"]) == ["answer to d", "answer to e"]
    assert sorted(reader.quarantined_) == sorted([truncated.name, altered.name])
    assert reader.parts() == [intact]
    assert sorted(p.name for p in (tmp_path / "cache" / "quarantine").iterdir()) == sorted(reader.quarantined_)
    assert len(PromptCache(tmp_path / "cache")) == 2 and not PromptCache(tmp_path / "cache").quarantined_


def test_a_part_from_before_checksummed_names_is_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "cache"
    folder.mkdir()
    old = rows(["a"]).assign(created="2026-11-01T00:00:00+00:00")
    pq.write_table(pa.Table.from_pandas(old, preserve_index=False), folder / "part-20261101000000-abcd1234.parquet")
    assert PromptCache(folder).lookup([prompt_key("m", PARAMS, "a")])["output"].tolist() == ["answer to a"]


def test_compaction_merges_small_parts_keeps_the_newest_answer_and_every_key(tmp_path):
    import pyarrow as pa

    from rec_core.storage.part_files import write_part

    folder = tmp_path / "cache"
    cache = PromptCache(folder)
    for second in range(10):  # parts of 3 answers, stamped 2 s apart; "p0" is answered in every one
        frame = rows([f"p{second}-{i}" for i in range(2)] + ["p0"]).assign(output=f"answer of part {second}")
        frame["created"] = "then"
        write_part(folder, pa.Table.from_pandas(frame, preserve_index=False), stamp=f"202601010000{2 * second:02d}")
    big = rows([f"big-{i}" for i in range(8)]).assign(created="then")
    write_part(folder, pa.Table.from_pandas(big, preserve_index=False), stamp="20260101000009")  # after part 4
    keys = [prompt_key("m", PARAMS, p) for p in ["p0"] + [f"p{s}-{i}" for s in range(10) for i in range(2)]
            + [f"big-{i}" for i in range(8)]]
    before = cache.lookup(keys).set_index("key").sort_index()
    assert before.loc[keys[0], "output"] == "answer of part 9" and len(before) == len(keys)

    assert cache.compact(max_parts=11, part_rows=7) == 0  # 11 parts: not more than the limit
    removed = cache.compact(max_parts=4, part_rows=7)
    after = PromptCache(folder)
    # parts 0-1 and 2-3 merge (6 rows each, 7 would overflow), 4 alone before the big part, which stays,
    # then 5-6, 7-8, and 9 alone
    assert removed == 8 and len(after.parts()) == 11 - 8 + 4
    assert any(part.name.startswith("part-20260101000009-") and pa.parquet.read_table(part).num_rows == 8
               for part in after.parts())
    merged = after.lookup(keys).set_index("key").sort_index()
    pd.testing.assert_frame_equal(merged, before)
    assert len(after) == len(keys) + 5  # "p0" once in each of the 6 small parts left, not 10 times
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.integration
def test_the_lookup_on_ray_data_equals_the_drivers(tmp_path, local_ray):
    """The same requests and cache looked up both ways (rec_core.llm.stage): rendered by Ray Data
    actors and joined against the cache's parts read by Ray tasks, and in the driver. Equal keys,
    the same newest answers (a key answered in two parts), the same prompts left to send (a prompt
    asked twice is sent once), and the damaged part quarantined and counted by both."""
    from rec_core.llm.offline_model import default_model_dir
    from rec_core.llm.stage import PromptRenderer, look_up_here, look_up_on_ray
    from rec_core.storage.part_files import write_part

    if not (default_model_dir() / "config.json").exists():
        pytest.fail("offline default model missing: bin/setup prepares it")
    model = str(default_model_dir())
    texts = ["a", "b", "c", "d", "e", "e", "a"]
    requests = pd.DataFrame({"request_id": range(len(texts)), "system": "group the items",
                             "user": [f"Items:\n1. {t}" for t in texts], "schema": '{"type": "object"}'})
    key_of = dict(zip(texts, PromptRenderer(model, PARAMS)(requests)["key"]))

    def answers(answered: dict[str, str]) -> pa.Table:
        return pa.Table.from_pandas(pd.DataFrame({
            "key": [key_of[t] for t in answered], "model": model, "output": list(answered.values()),
            "num_input_tokens": 7, "num_generated_tokens": 3, "created": "then"}), preserve_index=False)

    folder = tmp_path / "cache"
    write_part(folder, answers({"a": "old a", "b": "old b"}), stamp="20260101000000")
    write_part(folder, answers({"b": "new b", "c": "c"}),
               stamp="20260101000001")
    damaged = write_part(folder, answers({"d": "d"}), stamp="20260101000002")
    damaged.write_bytes(damaged.read_bytes()[:-40])
    Location.of(folder).copy_tree(Location.of(tmp_path / "copy"))

    here = look_up_here(requests, model, PARAMS, PromptCache(folder))
    on_ray = look_up_on_ray(requests, model, PARAMS, PromptCache(tmp_path / "copy"),
                            {"render_workers": 2})
    pd.testing.assert_frame_equal(on_ray.keys, here.keys)
    assert on_ray.keys["key"].map({k: t for t, k in key_of.items()}).tolist() == texts
    by_key = {key: t for t, key in key_of.items()}
    for lookup in (here, on_ray):
        assert dict(zip(lookup.cached["key"].map(by_key), lookup.cached["output"])) == \
            {"a": "old a", "b": "new b", "c": "c"}
        assert lookup.cached["num_input_tokens"].tolist() == [7, 7, 7]
        assert lookup.quarantined == 1 and lookup.todo_count == 2
    todo = on_ray.todo.to_pandas().sort_values("key", ignore_index=True)
    pd.testing.assert_frame_equal(todo, here.todo.sort_values("key", ignore_index=True), check_dtype=False)
    assert sorted(todo["key"].map(by_key)) == ["d", "e"]
