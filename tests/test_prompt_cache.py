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
