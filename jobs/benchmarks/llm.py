"""LLM-stage benchmarks (run through `python -m jobs.benchmark <name>`; each prints figures).

    python -m jobs.benchmark llm-throughput --dataset movielens-100k --prompts 96
    python -m jobs.benchmark llm-cache --dataset movielens-100k --changed 0.01
    python -m jobs.benchmark grouping --dataset amazon-beauty --backend llm semantic.max_users=300

`llm-throughput` sends the same semantic-grouping prompts (real users of the data set, the
project's JSON schema per row) to the same model four ways, one after the other in one run:
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

`grouping` ingests a data set and runs the semantic stage with one backend, then prints the user
statistics (ok / repaired / failed), clusters per user, coherence against random partitions of
the same sizes, LLM token counts and timings, and a few users' clusters in words.
"""

from __future__ import annotations

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
from jobs.semantic import cluster_requests, recent_items, select_users, semantic
from rec_core.run.directory import Run


def _histories(run: Run) -> dict[int, list[int]]:
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


def throughput(dataset: str, config_path: str | None, overrides: list[str], prompts: int) -> None:
    import ray

    from rec_core.llm.stage import run_prompts
    from rec_core.llm.prompt_cache import PromptCache

    run = ingested_run(dataset, config_path, overrides, "llm-throughput")
    histories = dict(list(_histories(run).items())[:prompts])
    requests = cluster_requests(run.read_table("items"), histories, run.config["semantic"]["max_clusters"])
    llm_config = run.config["llm"]
    requests_file = run.root / "throughput_requests.parquet"
    requests.to_parquet(requests_file)
    print(f"{len(requests)} prompts from {dataset}; model {llm_config['model'] or 'offline default'}", flush=True)

    results = {"bare_eager_before": _bare_in_fresh_process(requests_file, {**llm_config, "enforce_eager": True})}
    print("bare eager:", json.dumps(results["bare_eager_before"]), flush=True)
    ray.init(configure_logging=False)  # Ray's own start-up is not the stage's cost
    with tempfile.TemporaryDirectory() as empty_cache:
        _, stats = run_prompts(requests, {**llm_config, "enforce_eager": True}, PromptCache(empty_cache))
    ray.shutdown()
    results["ray_data"] = {"total_s": stats.seconds, "output_tokens": stats.output_tokens, "sent": stats.sent,
                           "errors": stats.errors, "end_to_end_tokens_per_s": stats.as_dict()["output_tokens_per_s"]}
    print("Ray Data stage:", json.dumps(results["ray_data"]), flush=True)
    results["bare_eager_after"] = _bare_in_fresh_process(requests_file, {**llm_config, "enforce_eager": True})
    print("bare eager:", json.dumps(results["bare_eager_after"]), flush=True)
    results["bare_compiled"] = _bare_in_fresh_process(requests_file, {**llm_config, "enforce_eager": False})
    print("bare compiled:", json.dumps(results["bare_compiled"]), flush=True)

    bare = np.mean([results[k]["end_to_end_tokens_per_s"] for k in ("bare_eager_before", "bare_eager_after")])
    ratio = results["ray_data"]["end_to_end_tokens_per_s"] / bare
    eager, compiled = results["bare_eager_before"], results["bare_compiled"]
    print(f"\n== LLM stage throughput on {dataset}, {len(requests)} prompts, end to end (engine start-up included)")
    print(f"Ray Data stage      {results['ray_data']['end_to_end_tokens_per_s']:8.1f} output tokens/s")
    print(f"bare vllm.LLM.chat  {bare:8.1f} output tokens/s (mean of before/after)")
    print(f"ratio Ray Data / bare = {ratio:.3f} (target >= 0.85)")
    print(f"engine start-up: eager {eager['load_s']:.1f} s, compiled {compiled['load_s']:.1f} s; generation: "
          f"eager {eager['generate_tokens_per_s']:.1f} tok/s, compiled {compiled['generate_tokens_per_s']:.1f} tok/s")
    print(json.dumps({"benchmark": "llm-throughput", "dataset": dataset, "prompts": len(requests),
                      "ray_vs_bare": round(ratio, 3), **results}))


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


# --------------------------------------------------------------------------------------- grouping

def grouping(dataset: str, config_path: str | None, overrides: list[str], backend: str, examples: int) -> None:
    run = ingested_run(dataset, config_path, [f"semantic.backend={backend}", *overrides], f"grouping-{backend}")
    table = semantic(run)
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


def add_commands(commands) -> None:
    speed = commands.add_parser("llm-throughput", help="Ray Data LLM stage vs bare vllm.LLM.chat; eager vs compiled")
    speed.add_argument("--prompts", type=int, default=96)
    speed.set_defaults(run=lambda args: throughput(args.dataset, args.config, args.overrides, args.prompts))
    cached = commands.add_parser("llm-cache", help="prompts sent on a rerun and after changing some histories")
    cached.add_argument("--changed", type=float, default=0.01, help="share of the users whose history changes")
    cached.add_argument("--change-seed", type=int, default=None, help="default: the clock")
    cached.set_defaults(run=lambda args: cache(
        args.dataset, args.config, args.overrides, args.changed,
        args.change_seed if args.change_seed is not None else time.time_ns() % 2**31))
    group = commands.add_parser("grouping", help="semantic grouping statistics, coherence and examples")
    group.add_argument("--backend", choices=["encoder", "llm"], default="encoder")
    group.add_argument("--examples", type=int, default=3)
    group.set_defaults(run=lambda args: grouping(args.dataset, args.config, args.overrides, args.backend,
                                                 args.examples))
    for parser in (speed, cached, group):
        add_data_arguments(parser)


if __name__ == "__main__":  # the bare-vLLM side of llm-throughput, in its own process
    figures = bare_vllm(pd.read_parquet(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()))
    Path(sys.argv[3]).write_text(json.dumps(figures))
