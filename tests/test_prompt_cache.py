import pandas as pd

from rec_core.llm.prompt_cache import PromptCache, prompt_key

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
