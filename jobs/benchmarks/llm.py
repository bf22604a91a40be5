"""LLM-stage benchmarks (run through `python -m jobs.benchmark <name>`; each prints figures).

    python -m jobs.benchmark llm-throughput --dataset movielens-100k --prompts 96
    python -m jobs.benchmark llm-cache --dataset movielens-100k --changed 0.01
    python -m jobs.benchmark grouping --dataset amazon-beauty --backend llm semantic.max_users=300
    python -m jobs.benchmark describe-cache --dataset movielens-100k graph.max_llm_nodes=200
    python -m jobs.benchmark describe-cost --datasets movielens-100k,movielens-1m,amazon-beauty --neighbours 5,10,20
    python -m jobs.benchmark prompt-tokens --run-folder <output_dir>/<run_id> --sample 2000
    python -m jobs.benchmark prompt-lookup --prompts 200000 --cached-share 0.5

`prompt-lookup` renders and keys seeded synthetic grouping prompts and looks them up in a cache
that answers a share of them, once in the driver (`look_up_here`) and once on Ray Data
(`look_up_on_ray`: rendering actors and a join), each in its own process: seconds, the driver's
peak RSS, and what each found (equal by construction; tests/test_prompt_cache.py checks it).

`prompt-tokens` counts, with the configured model's tokenizer, the input tokens of the semantic
grouping prompts (chat-rendered, as the LLM stage sends them) of a seeded sample of a finished
run's training users: what a cost projection of the LLM backend needs, without generating.

`llm-throughput` sends the same semantic-grouping prompts (real users of the data set, the
project's JSON schema per row; `--source descriptions`: the graph descriptions' layer-1 prompts) to the same model four ways, one after the other in one run:
bare `vllm.LLM.chat` with enforce_eager (in a fresh process) -> the Ray Data stage
(rec_core.llm.stage.run_prompts, an empty cache) -> bare eager again -> bare compiled
(enforce_eager=False). Each is timed end to end, engine start-up (the vLLM import included)
included, because that is what a job pays; the bare runs also report load and generation time
apart. The ratio is Ray Data
output tokens/s over the mean of the two bare eager runs (before and after, so that drift in the
machine's speed hits both sides alike).

`llm-cache` groups the selected users with the LLM backend three times against the shared cache:
as is (answers may already be cached), again (must send 0 prompts), and after adding one new
item to the histories of `--changed` of the users (must send exactly those users' prompts). The
changed items are drawn with `--change-seed` (default: the clock, so that a repeated benchmark
really sends new prompts).

`describe-cache` runs the describe stage with the LLM aggregator (`graph.max_llm_nodes` sets the
budget) three times: as is, again (every layer must send 0 prompts), and in a new run whose
interactions give `--changed` of the users (training users) one new item each. The prompts sent
then must be exactly those of the budget nodes whose L-hop prompt inputs changed; the benchmark
counts those independently from the two runs' graphs and node_descriptions tables (own and
sampled neighbours' previous-layer texts and the sample itself; no prompt rendered, no cache
read) and compares both the counts and the node sets. It also prints the first run's LLM calls,
tokens and seconds per layer.

`describe-cost` renders and tokenizes every node's layer-1 description prompt (no generation) for
each data set and `graph.neighbours` value: calls per layer and prompt tokens, how they grow with
the graph and with the neighbour count.

`grouping` ingests a data set and runs the semantic stage with one backend, then prints the user
statistics (ok / repaired / failed), clusters per user, coherence against random partitions of
the same sizes, LLM token counts and timings, and a few users' clusters in words.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.benchmarks import add_data_arguments, ingested_run
from jobs.semantic import cluster_requests, select_users, semantic
from rec_core.data.splits import Histories, recent_items
from rec_core.run.config import load_config
from rec_core.run.directory import Run


def _histories(run: Run) -> Histories:
    semantic_config = run.config["semantic"]
    users = select_users(run.read_table("user_splits"), semantic_config["max_users"],
                         semantic_config["selection_seed"])
    return recent_items(run.read_table("interactions"), users, semantic_config["max_items"])


# ------------------------------------------------------------------------------------- throughput

def bare_vllm(requests: pd.DataFrame, llm_config: dict) -> dict:
    """The same prompts through `vllm.LLM.chat` in this process: load and generation timed apart."""
    from rec_core.llm.stage import engine_env, messages_for, processor_config_kwargs, resolve_model, sampling_params

    os.environ.update(engine_env(llm_config))
    began = time.perf_counter()  # importing vLLM is part of the start-up, as it is in the Ray stage's actor
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    model = resolve_model(llm_config)
    llm = LLM(model=model, **processor_config_kwargs(llm_config, model)["engine_kwargs"])
    loaded = time.perf_counter()
    params = [SamplingParams(**sampling_params(llm_config), structured_outputs=StructuredOutputsParams(json=schema))
              for schema in requests["schema"]]
    outputs = llm.chat([messages_for(s, u) for s, u in zip(requests["system"], requests["user"])], params,
                       use_tqdm=False)
    done = time.perf_counter()
    tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    return {"load_s": round(loaded - began, 2), "generate_s": round(done - loaded, 2),
            "total_s": round(done - began, 2), "output_tokens": tokens,
            "generate_tokens_per_s": round(tokens / (done - loaded), 2),
            "end_to_end_tokens_per_s": round(tokens / (done - began), 2)}


def _bare_in_fresh_process(requests_file: Path, llm_config: dict) -> dict:
    """bare_vllm in a child process, so that each engine starts cold and frees its memory."""
    config_file = requests_file.with_suffix(f".{int(llm_config['enforce_eager'])}.json")
    result_file = requests_file.with_suffix(f".{int(llm_config['enforce_eager'])}.result.json")
    config_file.write_text(json.dumps(llm_config))
    result_file.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "jobs.benchmarks.llm", str(requests_file), str(config_file),
                           str(result_file)], capture_output=True, text=True)
    if done.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"bare vLLM run failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(result_file.read_text())


def benchmark_requests(run: Run, source: str, prompts: int) -> pd.DataFrame:
    """`prompts` requests of the semantic grouping (the first users) or of the graph descriptions'
    layer 1 (a `graph.max_llm_nodes`-style seeded budget of users and items)."""
    if source == "descriptions":
        from jobs.describe import description_requests, layer0_texts, layer_samples, llm_nodes

        graph_config = {**run.config["graph"], "max_llm_nodes": prompts}
        graph, ids, texts = layer0_texts(run)
        return description_requests(graph_config, ids, texts, layer_samples(graph, ids, 1, graph_config),
                                    llm_nodes(ids, graph_config))
    histories = dict(list(_histories(run).items())[:prompts])
    return cluster_requests(run.read_table("items"), histories, run.config["semantic"]["max_clusters"])


def throughput(dataset: str, config_path: str | None, overrides: list[str], prompts: int, source: str,
               compiled: bool = True) -> None:
    import ray

    from jobs.ray_runtime import init_ray
    from rec_core.llm.stage import run_prompts
    from rec_core.llm.prompt_cache import PromptCache

    run = ingested_run(dataset, config_path, overrides, f"llm-throughput-{source}")
    requests = benchmark_requests(run, source, prompts)
    llm_config = run.config["llm"]
    requests_file = run.root.as_path() / "throughput_requests.parquet"  # the bare side reads it in a child process
    requests.to_parquet(requests_file)
    print(f"{len(requests)} {source} prompts from {dataset}; model {llm_config['model'] or 'offline default'}; "
          f"local Ray's dashboard: {run.config['ray']['dashboard']}", flush=True)

    results = {"bare_eager_before": _bare_in_fresh_process(requests_file, {**llm_config, "enforce_eager": True})}
    print("bare eager:", json.dumps(results["bare_eager_before"]), flush=True)
    init_ray(run.config["ray"])  # Ray's own start-up is not the stage's cost (its dashboard: ray.dashboard)
    with tempfile.TemporaryDirectory() as empty_cache:
        _, stats = run_prompts(requests, {**llm_config, "enforce_eager": True}, PromptCache(empty_cache))
    ray.shutdown()
    results["ray_data"] = {"total_s": stats.seconds, "output_tokens": stats.output_tokens, "sent": stats.sent,
                           "errors": stats.errors, "end_to_end_tokens_per_s": stats.as_dict()["output_tokens_per_s"]}
    print("Ray Data stage:", json.dumps(results["ray_data"]), flush=True)
    results["bare_eager_after"] = _bare_in_fresh_process(requests_file, {**llm_config, "enforce_eager": True})
    print("bare eager:", json.dumps(results["bare_eager_after"]), flush=True)
    if compiled:
        results["bare_compiled"] = _bare_in_fresh_process(requests_file, {**llm_config, "enforce_eager": False})
        print("bare compiled:", json.dumps(results["bare_compiled"]), flush=True)

    bare = np.mean([results[k]["end_to_end_tokens_per_s"] for k in ("bare_eager_before", "bare_eager_after")])
    ratio = results["ray_data"]["end_to_end_tokens_per_s"] / bare
    eager = results["bare_eager_before"]
    print(f"\n== LLM stage throughput on {dataset}, {len(requests)} {source} prompts, end to end (engine start-up included)")
    print(f"Ray Data stage      {results['ray_data']['end_to_end_tokens_per_s']:8.1f} output tokens/s")
    print(f"bare vllm.LLM.chat  {bare:8.1f} output tokens/s (mean of before/after)")
    print(f"ratio Ray Data / bare = {ratio:.3f} (target >= {0.9 if source == 'descriptions' else 0.85})")
    print(f"engine start-up, eager: {eager['load_s']:.1f} s; generation, eager: {eager['generate_tokens_per_s']:.1f} tok/s")
    if compiled:
        print(f"engine start-up, compiled: {results['bare_compiled']['load_s']:.1f} s; generation, compiled: "
              f"{results['bare_compiled']['generate_tokens_per_s']:.1f} tok/s")
    print(json.dumps({"benchmark": "llm-throughput", "dataset": dataset, "source": source, "prompts": len(requests),
                      "ray_dashboard": run.config["ray"]["dashboard"], "ray_vs_bare": round(ratio, 3), **results}))


# ------------------------------------------------------------------------------------------ cache

def cache(dataset: str, config_path: str | None, overrides: list[str], changed: float, change_seed: int) -> None:
    from rec_core.llm.stage import cache_folder, run_prompts
    from rec_core.llm.prompt_cache import PromptCache

    run = ingested_run(dataset, config_path, overrides, "llm-cache")
    items, config = run.read_table("items"), run.config
    histories = _histories(run)
    prompt_cache = PromptCache(cache_folder(config))
    max_clusters = config["semantic"]["max_clusters"]

    def send(label: str, current: dict[int, list[int]]) -> pd.DataFrame:
        answers, stats = run_prompts(cluster_requests(items, current, max_clusters), config["llm"], prompt_cache,
                                     cache_flush_rows=config["llm"]["cache_flush_rows"])
        print(f"{label}: {stats.prompts} prompts, {stats.cache_hits} from the cache, {stats.sent} sent, "
              f"{stats.errors} errors, {stats.seconds} s", flush=True)
        return answers

    send("first run", histories)
    rerun = send("rerun", histories)
    rng = np.random.default_rng(change_seed)
    users = np.array(sorted(histories))
    picked = set(rng.choice(users, size=max(1, round(changed * len(users))), replace=False).tolist())
    changed_histories = dict(histories)
    for user in picked:  # one new interaction: an item the user has not seen, most recent last
        unseen = np.setdiff1d(items["item_id"].to_numpy(), histories[user])
        changed_histories[user] = histories[user][1:] + [int(rng.choice(unseen))]
    after = send(f"after changing {len(picked)} users' histories", changed_histories)
    sent_users = set(after.loc[~after["cached"].astype(bool), "request_id"].astype(int))
    figures = {"benchmark": "llm-cache", "dataset": dataset, "users": len(users), "change_seed": change_seed,
               "rerun_sent": int((~rerun["cached"].astype(bool)).sum()), "changed_users": len(picked),
               "changed_sent": len(sent_users), "sent_are_exactly_the_changed_users": sent_users == picked}
    print(f"\n== LLM cache on {dataset}: rerun sent {figures['rerun_sent']} (target 0); changed "
          f"{len(picked)} users, sent {len(sent_users)}, exactly those users: {sent_users == picked}")
    print(json.dumps(figures))


# ------------------------------------------------------------------------------ description cache

def add_interactions(interactions: pd.DataFrame, user_splits: pd.DataFrame, share: float,
                     rng: np.random.Generator) -> tuple[pd.DataFrame, list[int]]:
    """`share` of all users (drawn among the training users) each get one new interaction, an
    item they have not seen, after their latest one; rows stay sorted by user, then time."""
    train_users = np.sort(user_splits.loc[user_splits["split"] == "train", "user_id"].to_numpy())
    picked = sorted(rng.choice(train_users, size=max(1, round(share * len(user_splits))), replace=False).tolist())
    catalogue = np.unique(interactions["item_id"].to_numpy())
    new_rows = []
    for user in picked:
        own = interactions[interactions["user_id"] == user]
        new_rows.append({"user_id": user, "item_id": int(rng.choice(np.setdiff1d(catalogue, own["item_id"]))),
                         "ts": own["ts"].max() + 1})
    changed = pd.concat([interactions, pd.DataFrame(new_rows).astype(interactions.dtypes.to_dict())],
                        ignore_index=True)
    return changed.sort_values("user_id", kind="stable", ignore_index=True), picked


def presented_texts(descriptions: pd.DataFrame, layers: int) -> list[dict[tuple[str, int], str]]:
    """Per layer, the text every node shows its neighbours: its latest layer0 or llm text (encoder
    rows carry none, so a node outside the LLM budget keeps showing its layer-0 text)."""
    written = descriptions[descriptions["backend"].isin(["layer0", "llm"])]
    out, current = [], {}
    for layer in range(layers + 1):
        rows = written[written["layer"] == layer]
        current = {**current, **dict(zip(zip(rows["node_type"], rows["node_id"].astype(int)), rows["text"]))}
        out.append(current)
    return out


def changed_prompt_inputs(before: Run, after: Run) -> list[set[str]]:
    """Per layer >= 1, the LLM-budget nodes ("<type>:<id>") whose prompt inputs differ between two
    runs: their own or a sampled neighbour's previous-layer text, or the neighbour sample itself.
    Derived from the two graphs and the node_descriptions tables; no prompt is rendered and no
    cache is read, so it checks the cache's behaviour independently."""
    from jobs.describe import layer0_texts, layer_samples, llm_nodes

    graph_config = after.config["graph"]
    shown = {run: presented_texts(run.read_table("node_descriptions"), graph_config["layers"])
             for run in (before, after)}
    graphs = {run: layer0_texts(run) for run in (before, after)}
    ids = graphs[after][1]
    chosen = llm_nodes(ids, graph_config)
    other = {"user": "item", "item": "user"}
    changed = []
    for layer in range(1, graph_config["layers"] + 1):
        samples = {run: layer_samples(graphs[run][0], graphs[run][1], layer, graph_config) for run in (before, after)}
        nodes = set()
        for node_type in ("user", "item"):
            for position in np.flatnonzero(chosen[node_type]):
                node = int(ids[node_type][position])
                neighbours = {run: [int(graphs[run][1][other[node_type]][q]) for q in samples[run][node_type][position]]
                              for run in (before, after)}
                inputs = {run: (shown[run][layer - 1][(node_type, node)],
                                [shown[run][layer - 1][(other[node_type], n)] for n in neighbours[run]])
                          for run in (before, after)}
                if neighbours[before] != neighbours[after] or inputs[before] != inputs[after]:
                    nodes.add(f"{node_type}:{node}")
        changed.append(nodes)
    return changed


def describe_cache(dataset: str, config_path: str | None, overrides: list[str], changed: float,
                   change_seed: int) -> None:
    from jobs.describe import describe

    overrides = ["graph.backend=llm", *overrides]
    run = ingested_run(dataset, config_path, overrides, "describe-cache")
    first = describe(run)
    rerun = describe(run)
    changed_run = Run(load_config(config_path, [f"data.dataset={dataset}", f"run_id={run.run_id}-changed", *overrides]))
    for table in ("items", "users", "user_splits"):
        changed_run.write_table(table, run.read_table(table))
    interactions, picked = add_interactions(run.read_table("interactions"), run.read_table("user_splits"), changed,
                                            np.random.default_rng(change_seed))
    changed_run.write_table("interactions", interactions)
    after = describe(changed_run)
    expected = changed_prompt_inputs(run, changed_run)
    earlier_keys = set(run.read_table("node_descriptions")["cache_key"])
    new = changed_run.read_table("node_descriptions")
    new = new[(new["backend"] == "llm") & ~new["cache_key"].isin(earlier_keys)]
    with_new_keys = [set(rows["node_type"] + ":" + rows["node_id"].astype(str)) for _, rows in new.groupby("layer")]
    with_new_keys += [set()] * (len(expected) - len(with_new_keys))
    layers = []
    for layer, (sent_first, sent_rerun, sent_after) in enumerate(zip(first["layers"], rerun["layers"], after["layers"]), 1):
        layers.append({"layer": layer, "prompts": sent_first["llm"]["prompts"], "first_sent": sent_first["llm"]["sent"],
                       "rerun_sent": sent_rerun["llm"]["sent"], "changed_sent": sent_after["llm"]["sent"],
                       "changed_inputs_counted": len(expected[layer - 1]),
                       "same_nodes": with_new_keys[layer - 1] == expected[layer - 1],
                       "input_tokens": sent_first["llm"]["input_tokens"],
                       "output_tokens": sent_first["llm"]["output_tokens"], "seconds": sent_first["llm"]["seconds"]})
    print(f"\n== description cache on {dataset}: graph.max_llm_nodes={run.config['graph']['max_llm_nodes']}, "
          f"{run.config['graph']['layers']} layers; {len(picked)} training users ({changed:.0%} of all users) got one "
          "new interaction")
    print(pd.DataFrame(layers).to_string(index=False))
    print(json.dumps({"benchmark": "describe-cache", "dataset": dataset, "change_seed": change_seed,
                      "changed_users": len(picked), "max_llm_nodes": run.config["graph"]["max_llm_nodes"],
                      "layers": layers}))


def describe_cost(datasets: list[str], config_path: str | None, overrides: list[str], neighbours: list[int]) -> None:
    """LLM calls and prompt tokens of the graph descriptions, without generating: every node's
    layer-1 prompt rendered with the model's chat template and tokenized, per data set and
    `graph.neighbours`. Calls per layer are the node count (every node, no budget); layer >= 2
    prompts read generated texts of at most `graph.max_chars` where layer 1 reads catalogue texts
    and templates, so their tokens are bounded the same way."""
    from transformers import AutoTokenizer

    from jobs.describe import description_requests, layer0_texts, layer_samples, llm_nodes
    from rec_core.llm.stage import render_prompts, resolve_model

    rows = []
    for dataset in datasets:
        run = ingested_run(dataset, config_path, overrides, "describe-cost")
        model = resolve_model(run.config["llm"])
        tokenizer = AutoTokenizer.from_pretrained(model)
        graph, ids, texts = layer0_texts(run)
        for k in neighbours:
            graph_config = {**run.config["graph"], "neighbours": k, "max_llm_nodes": 0}
            requests = description_requests(graph_config, ids, texts, layer_samples(graph, ids, 1, graph_config),
                                            llm_nodes(ids, graph_config))
            prompts = render_prompts(model, requests["system"], requests["user"])
            tokens = np.array([len(ids_) for ids_ in tokenizer(prompts, add_special_tokens=False)["input_ids"]])
            rows.append({"dataset": dataset, "users": graph.num_users, "items": graph.num_items,
                         "edges": int(len(graph.user_items)), "neighbours": k, "calls_per_layer": len(requests),
                         "input_tokens_per_layer": int(tokens.sum()), "mean_prompt_tokens": round(float(tokens.mean()), 1),
                         "max_prompt_tokens": int(tokens.max())})
            print(json.dumps({"benchmark": "describe-cost", **rows[-1]}), flush=True)
    print("\n== graph-description cost per layer (layer-1 prompts, chat template included; no generation)")
    print(pd.DataFrame(rows).to_string(index=False))


# --------------------------------------------------------------------------------------- grouping

def grouping(dataset: str, config_path: str | None, overrides: list[str], backend: str, examples: int) -> None:
    run = ingested_run(dataset, config_path, [f"semantic.backend={backend}", *overrides], f"grouping-{backend}")
    table = semantic(run).to_pandas()
    info = run.manifest["stages"]["semantic"]
    texts = dict(zip(run.read_table("items")["item_id"], run.read_table("items")["text"]))
    print(f"\n== grouping on {dataset}, backend {backend}, {len(table['user_id'].unique())} users "
          f"(semantic.max_users={run.config['semantic']['max_users']}, max_items="
          f"{run.config['semantic']['max_items']}, max_clusters={run.config['semantic']['max_clusters']})")
    print(f"users by status: {info['users']}; clusters per user {info['clusters_per_user']}")
    print(f"coherence {info['coherence']['coherence']:.3f} against {info['coherence']['random_baseline']:.3f} "
          f"for random partitions of the same sizes")
    if "llm" in info:
        print(f"LLM: {json.dumps(info['llm'])}")
    repairs = table.loc[table["status"] != "ok"].drop_duplicates("user_id")["detail"]
    if len(repairs):
        print("repairs / failures (users):", dict(repairs.str.split("; ").explode().value_counts().head(8)))
    for user in table["user_id"].drop_duplicates().sample(min(examples, table["user_id"].nunique()),
                                                          random_state=0):
        print(f"\nuser {user}:")
        for row in table[table["user_id"] == user].itertuples():
            titles = "; ".join(texts[i][:60] for i in row.item_ids)
            print(f"  [{row.status}] {row.name!r}: {titles}" if row.cluster >= 0 else f"  [failed] {row.detail}")
    print(json.dumps({"benchmark": "grouping", "dataset": dataset, "backend": backend,
                      "users": info["users"], "clusters_per_user": info["clusters_per_user"],
                      "coherence": info["coherence"], "llm": info.get("llm"), "seconds": info.get("seconds")}))


def prompt_tokens(run_folder: str, sample: int, seed: int, overrides: list[str]) -> None:
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from rec_core.llm.stage import render_prompts, resolve_model

    config = load_config(None, overrides)
    splits = pq.read_table(Path(run_folder) / "user_splits").to_pandas()
    train = splits.loc[splits["split"] == "train", "user_id"].to_numpy()
    users = np.sort(np.random.default_rng(seed).choice(train, min(sample, len(train)), replace=False))
    interactions = pq.read_table(Path(run_folder) / "interactions", filters=[("user_id", "in", users.tolist())])
    histories = recent_items(interactions.to_pandas(), users, config["semantic"]["max_items"])
    requests = cluster_requests(pq.read_table(Path(run_folder) / "items").to_pandas(), histories,
                                config["semantic"]["max_clusters"])
    model = resolve_model(config["llm"])
    tokenizer = AutoTokenizer.from_pretrained(model)
    counts = np.array([len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
                       for prompt in render_prompts(model, requests["system"], requests["user"])])
    print(f"{run_folder}: {len(train)} training users, {len(counts)} sampled (seed {seed}); input tokens per "
          f"grouping prompt: mean {counts.mean():.1f}, median {np.median(counts):.0f}, p95 "
          f"{np.percentile(counts, 95):.0f}, max {counts.max()}; output at most llm.max_tokens = "
          f"{config['llm']['max_tokens']}")


# ---------------------------------------------------------------------------------- prompt lookup

def lookup_requests(prompts: int, items: int, seed: int) -> pd.DataFrame:
    """`prompts` semantic-grouping requests of 15 items each, drawn (seeded) from a synthetic catalogue."""
    from jobs.semantic import SYSTEM_PROMPT, row_schema, user_prompt

    rng = np.random.default_rng(seed)
    titles = [f"Item {i} - category {i % 97}" for i in range(items)]
    drawn = rng.integers(0, items, size=(prompts, 15))
    return pd.DataFrame({"request_id": np.arange(prompts), "system": SYSTEM_PROMPT.format(max_clusters=4),
                         "user": [user_prompt([titles[i] for i in row]) for row in drawn],
                         "schema": row_schema(15, 4)})


def prompt_lookup(prompts: int, cached_share: float, seed: int, overrides: list[str]) -> None:
    """Rendering + cache lookup of `prompts` grouping prompts, in the driver and on Ray Data (each in
    its own process, so each peak RSS is its own), against one cache that answers `cached_share` of
    them in parts of `llm.cache_part_rows` (a compacted cache). Nothing is generated."""
    import pyarrow as pa

    from rec_core.llm.prompt_cache import PromptCache
    from rec_core.llm.stage import PromptRenderer, resolve_model, sampling_params
    from rec_core.storage.part_files import write_part

    config = load_config(None, overrides)
    model, params = resolve_model(config["llm"]), sampling_params(config["llm"])
    with tempfile.TemporaryDirectory() as folder:
        requests = lookup_requests(prompts, 50_000, seed)
        requests.to_parquet(Path(folder) / "requests.parquet")
        answered = requests.iloc[: int(prompts * cached_share)]
        began = time.perf_counter()
        part_rows = config["llm"]["cache_part_rows"]
        renderer = PromptRenderer(model, params)
        for start in range(0, len(answered), part_rows):
            keys = renderer(answered.iloc[start:start + part_rows])["key"]
            write_part(Path(folder) / "cache", pa.Table.from_pandas(pd.DataFrame({
                "key": keys, "model": model, "output": '{"clusters": []}', "num_input_tokens": 300,
                "num_generated_tokens": 40, "created": "benchmark"}), preserve_index=False))
        print(f"cache of {len(answered)} answers in {len(PromptCache(Path(folder) / 'cache').parts())} parts "
              f"written in {time.perf_counter() - began:.1f} s", flush=True)
        rows = []
        for way in ("driver", "ray"):
            child = subprocess.run([sys.executable, "-m", "jobs.benchmarks.llm", "lookup", folder, way,
                                    json.dumps(config["llm"])], capture_output=True, text=True)
            if child.returncode:
                raise RuntimeError(f"prompt-lookup ({way}) failed:\n{child.stderr[-3000:]}")
            rows.append({"way": way, **json.loads(child.stdout.strip().splitlines()[-1])})
            print(json.dumps({"benchmark": "prompt-lookup", "prompts": prompts, "cached_share": cached_share,
                              **rows[-1]}), flush=True)
    print(f"\n== rendering + cache lookup of {prompts} prompts ({cached_share:.0%} cached), nothing generated")
    print(pd.DataFrame(rows).to_string(index=False))


def lookup_child(folder: str, way: str, llm_config: dict) -> dict:
    """One side of prompt-lookup, in this process: seconds, this driver's peak RSS, what was found."""
    import resource

    from rec_core.llm.prompt_cache import PromptCache
    from rec_core.llm.stage import look_up_here, look_up_on_ray, resolve_model, sampling_params

    requests = pd.read_parquet(Path(folder) / "requests.parquet")
    model, params = resolve_model(llm_config), sampling_params(llm_config)
    cache = PromptCache(Path(folder) / "cache")
    began = time.perf_counter()
    if way == "ray":
        import ray

        ray.init(configure_logging=False, include_dashboard=False)
        lookup = look_up_on_ray(requests, model, params, cache, llm_config)
    else:
        lookup = look_up_here(requests, model, params, cache)
    return {"seconds": round(time.perf_counter() - began, 1), "cached_keys": len(lookup.cached),
            "to_send": lookup.todo_count, "request_keys": int(lookup.keys["key"].notna().sum()),
            "peak_driver_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def add_commands(commands) -> None:
    lookup = commands.add_parser("prompt-lookup", help="rendering + prompt-cache lookup in the driver vs on Ray "
                                                       "Data (a join), time and peak driver RSS")
    lookup.add_argument("--prompts", type=int, default=200_000)
    lookup.add_argument("--cached-share", type=float, default=0.5, help="share of the prompts the cache answers")
    lookup.add_argument("--seed", type=int, default=0)
    lookup.add_argument("overrides", nargs="*", help="key=value config overrides (llm.*)")
    lookup.set_defaults(run=lambda args: prompt_lookup(args.prompts, args.cached_share, args.seed, args.overrides))
    speed = commands.add_parser("llm-throughput", help="Ray Data LLM stage vs bare vllm.LLM.chat; eager vs compiled")
    speed.add_argument("--prompts", type=int, default=96)
    speed.add_argument("--source", choices=["grouping", "descriptions"], default="grouping",
                       help="the semantic-grouping prompts or the graph descriptions' layer-1 prompts")
    speed.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=True,
                       help="also time bare vLLM with torch.compile (~2.5 minutes on 2 cores)")
    speed.set_defaults(run=lambda args: throughput(args.dataset, args.config, args.overrides, args.prompts,
                                                   args.source, args.compiled))
    cached = commands.add_parser("llm-cache", help="prompts sent on a rerun and after changing some histories")
    cached.add_argument("--changed", type=float, default=0.01, help="share of the users whose history changes")
    cached.add_argument("--change-seed", type=int, default=None, help="default: the clock")
    cached.set_defaults(run=lambda args: cache(
        args.dataset, args.config, args.overrides, args.changed,
        args.change_seed if args.change_seed is not None else time.time_ns() % 2**31))
    described = commands.add_parser("describe-cache", help="graph-description prompts sent on a rerun and after "
                                                           "new interactions, against an independent count")
    described.add_argument("--changed", type=float, default=0.01, help="share of the users given a new interaction")
    described.add_argument("--change-seed", type=int, default=0)
    described.set_defaults(run=lambda args: describe_cache(args.dataset, args.config, args.overrides, args.changed,
                                                           args.change_seed))
    cost = commands.add_parser("describe-cost", help="graph-description LLM calls and prompt tokens per layer by "
                                                     "data set and graph.neighbours (no generation)")
    cost.add_argument("--datasets", default="movielens-100k,movielens-1m,amazon-beauty")
    cost.add_argument("--neighbours", default="5,10,20")
    cost.add_argument("--config", default=None, help="YAML run config under the overrides")
    cost.add_argument("overrides", nargs="*", help="key=value config overrides")
    cost.set_defaults(run=lambda args: describe_cost(args.datasets.split(","), args.config, args.overrides,
                                                     [int(k) for k in args.neighbours.split(",")]))
    tokens = commands.add_parser("prompt-tokens", help="input tokens of a finished run's semantic grouping prompts")
    tokens.add_argument("--run-folder", required=True, help="a finished run's folder (<output_dir>/<run_id>)")
    tokens.add_argument("--sample", type=int, default=2000, help="training users sampled")
    tokens.add_argument("--seed", type=int, default=0)
    tokens.add_argument("overrides", nargs="*", help="key=value config overrides (llm.model, semantic.*)")
    tokens.set_defaults(run=lambda args: prompt_tokens(args.run_folder, args.sample, args.seed, args.overrides))
    group = commands.add_parser("grouping", help="semantic grouping statistics, coherence and examples")
    group.add_argument("--backend", choices=["encoder", "llm"], default="encoder")
    group.add_argument("--examples", type=int, default=3)
    group.set_defaults(run=lambda args: grouping(args.dataset, args.config, args.overrides, args.backend,
                                                 args.examples))
    for parser in (speed, cached, described, group):
        add_data_arguments(parser)


if __name__ == "__main__":  # a side of llm-throughput (bare vLLM) or of prompt-lookup, in its own process
    if sys.argv[1] == "lookup":
        print(json.dumps(lookup_child(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))))
    else:
        figures = bare_vllm(pd.read_parquet(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()))
        Path(sys.argv[3]).write_text(json.dumps(figures))
