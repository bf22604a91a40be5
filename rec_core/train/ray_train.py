"""Ray Train (TorchTrainer) around the training recipe, with checkpoints and resume.

The multi-interest models (MultiInterestTraining) get their training users through Ray Data: a
Ray task cuts the training users' sequences into one Dataset per worker (`training_shards`:
contiguous ranges of users with about equal numbers of training pairs; the same ranges in every
run, so a resumed run trains on the same shards), and each worker reads its own with
`ray.train.get_dataset_shard` plus the validation users' rows (a filtered Parquet read); so a
worker holds its shard, not every training user. (Not Ray Train's own split of one Dataset: it
deals blocks to workers as they come, which is neither reproducible nor, with equal=True, lossless.)
The graph models (the convolution needs every edge on every replica) and the session models (a
few thousand sessions) read the run's tables in each worker. Each worker builds the recipe, wraps
the model in DDP (`ray.train.torch.prepare_model`, gloo on CPU)
and reports every epoch with a checkpoint (from rank 0). The run is named after the model and
stored under <run>/ray_train/ (on the run's own storage: a bucket's prefix when output_dir is an
object store, through Ray Train's `storage_filesystem`), so a killed run started again with the same run id is restored by
Ray Train from its latest checkpoint instead of starting over (Ray Train V2 restores a run whose
name and storage path already hold one).
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from rec_core.data.splits import ProtocolData, Sequences, build_protocol, cut_history, sequences_for
from rec_core.graph.bipartite import ITEM, USER, protocol_graph
from rec_core.interests.coherence import shuffled_clusters
from rec_core.models.names import parse_model_name
from rec_core.session.protocol import session_protocol
from rec_core.storage.location import Location, parquet_rows, read_parquet
from rec_core.train.distill_recipe import DistillTraining
from rec_core.train.graph_recipe import GraphTraining
from rec_core.train.recipe import MultiInterestTraining
from rec_core.train.saved_model import load_model, load_training_state
from rec_core.train.session_recipe import SessionTraining

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
SHARD_DATASET = "train_users_{rank}"  # the Ray Data dataset of worker `rank`'s training users
SHARD_BLOCK_USERS = 4096


def load_clusters(run_root: str | Location, table_name: str = "user_semantic_clusters",
                  id_column: str = "user_id", ids: np.ndarray | None = None) -> dict[int, list[list[int]]]:
    """id -> semantic clusters (item-id lists) of a semantic-clusters table of the run (failed rows
    left out); of the `ids` only when given (a worker's shard of the training users)."""
    path = Location.of(run_root) / table_name
    if not path.is_dir():
        stage = "semantic" if table_name == "user_semantic_clusters" else "synthesize and crowd_semantic"
        raise FileNotFoundError(f"{path} not found: run the {stage} stage(s) before training this model")
    table = read_parquet(path, filters=None if ids is None else pc.field(id_column).isin(ids)).to_pandas()
    table = table[table["status"] != "failed"].sort_values([id_column, "cluster"])
    return {int(key): [list(map(int, items)) for items in group["item_ids"]]
            for key, group in table.groupby(id_column)}


def is_session_run(run_root: str | Location) -> bool:
    """Session data (the ingest stage wrote `session_splits`): trained and evaluated on the session protocol."""
    return (Location.of(run_root) / "session_splits").is_dir()


def load_protocol(run_root: str | Location, history_fraction: float):
    """The run's ProtocolData: the session protocol for session data (rec_core.session.protocol;
    every model is trained and evaluated on it), else the ComiRec user protocol."""
    run_root = Location.of(run_root)
    num_items = parquet_rows(run_root / "items" / "part-0.parquet")
    if is_session_run(run_root):
        return session_protocol(read_parquet(run_root / "sessions").to_pandas(),
                                read_parquet(run_root / "session_splits").to_pandas(), num_items)
    interactions = read_parquet(run_root / "interactions").to_pandas()
    user_splits = read_parquet(run_root / "user_splits").to_pandas()
    return build_protocol(interactions, user_splits, num_items, history_fraction)


def reads_training_shard(model: str, run_root: str | Location) -> bool:
    """Whether the model trains on Ray Data shards of the training users (module docstring): the
    multi-interest models on the user protocol."""
    spec = parse_model_name(model)
    return not (spec.session or spec.graph or spec.distilled or is_session_run(run_root))


def shard_blocks(run_root: str | Location, world: int) -> list[list[pa.Table]]:
    """Per worker, its training users as Arrow blocks of SHARD_BLOCK_USERS users: columns user_id,
    item_ids (the user's training sequence, in time order); users in id order, cut into `world`
    contiguous ranges of about equal training pairs. Built from the two columns it needs."""
    run_root = Location.of(run_root)
    splits = read_parquet(run_root / "user_splits", columns=["user_id", "split"]).to_pandas()
    interactions = read_parquet(run_root / "interactions", columns=["user_id", "item_id"]).to_pandas()
    train = sequences_for(interactions, splits.loc[splits["split"] == "train", "user_id"].to_numpy())
    del interactions
    pairs = np.cumsum(np.maximum(np.diff(train.offsets) - 1, 0))
    cuts = np.searchsorted(pairs, pairs[-1] * np.arange(1, world) / world, side="right") if len(pairs) else []
    bounds = [0, *(int(cut) for cut in cuts), len(train)] if len(pairs) else [0] * world + [0]
    shards = []
    for rank in range(world):
        shard = train.slice(bounds[rank], bounds[rank + 1])
        parts = (shard.slice(start, min(start + SHARD_BLOCK_USERS, len(shard)))
                 for start in range(0, max(len(shard), 1), SHARD_BLOCK_USERS))
        shards.append([pa.table({"user_id": part.user_ids, "item_ids": part.list_array()}) for part in parts])
    return shards


def _streamed_shard_blocks(run_root: str, world: int):
    """`shard_blocks` as a Ray generator task: first the number of blocks of each worker, then the
    blocks in rank order, each its own object (owned by the caller, as a generator task's are)."""
    shards = shard_blocks(run_root, world)
    yield [len(blocks) for blocks in shards]
    for blocks in shards:
        for block in blocks:  # (not `yield from`: Ray's generator tasks drive the generator with send())
            yield block


def training_shards(run_root: str | Location, world: int) -> dict:
    """The Ray Datasets of `shard_blocks`, named SHARD_DATASET by worker rank. The blocks are cut in a
    Ray task and go from it to the object store: at 1M users, cutting them in the driver cost it
    ~670 MiB (the interactions' two columns, the training rows, the blocks)."""
    import ray

    stream = ray.remote(num_cpus=1, num_returns="streaming")(_streamed_shard_blocks).remote(str(run_root), world)
    counts = ray.get(next(stream))
    datasets = {}
    for rank, count in enumerate(counts):
        dataset = ray.data.from_arrow_refs([next(stream) for _ in range(count)])
        dataset.context.enable_progress_bars = False  # a worker reads its blocks in a blink: no bar in the log
        datasets[SHARD_DATASET.format(rank=rank)] = dataset
    return datasets


def shard_sequences(tables: list[pa.Table]) -> Sequences:
    """A worker's training users (the batches of its dataset, in any order) as Sequences in id order."""
    table = pa.concat_tables(tables).sort_by("user_id") if tables else pa.table(
        {"user_id": pa.array([], pa.int64()), "item_ids": pa.array([], pa.list_(pa.int64()))})
    lengths = pc.list_value_length(table["item_ids"]).to_numpy(zero_copy_only=False).astype(np.int64)
    items = pc.list_flatten(table["item_ids"]).to_numpy(zero_copy_only=False).astype(np.int64)
    return Sequences(table["user_id"].to_numpy().astype(np.int64),
                     np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), items)


def load_shard_protocol(run_root: str | Location, history_fraction: float, train: Sequences) -> ProtocolData:
    """The ProtocolData of a worker that trains on `train` (its shard): the validation users read with
    a row filter; the test split is not read (training never sees it)."""
    run_root = Location.of(run_root)
    splits = read_parquet(run_root / "user_splits", columns=["user_id", "split"]).to_pandas()
    valid_users = splits.loc[splits["split"] == "valid", "user_id"].to_numpy()
    rows = read_parquet(run_root / "interactions", filters=pc.field("user_id").isin(valid_users)).to_pandas()
    return ProtocolData(num_items=parquet_rows(run_root / "items" / "part-0.parquet"), train=train,
                        valid=cut_history(sequences_for(rows, valid_users), history_fraction), test=None)


def load_descriptions(run_root: str | Location, graph) -> list[np.ndarray]:
    """Per description layer, the [users + items, text dim] embeddings of `node_text_embeddings`
    in graph node order (users by graph row, then items by id)."""
    path = Location.of(run_root) / "node_text_embeddings"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found: run the describe stage before training lightgcn+desc")
    table = read_parquet(path).to_pandas()
    layers = []
    for layer, rows in table.groupby("layer", sort=True):
        users = rows[rows["node_type"] == USER]
        items = rows[rows["node_type"] == ITEM]
        vectors = np.zeros((graph.num_users + graph.num_items, len(rows["vector"].iloc[0])), np.float32)
        vectors[graph.user_row(users["node_id"].to_numpy())] = np.stack(users["vector"].to_numpy())
        vectors[graph.num_users + items["node_id"].to_numpy()] = np.stack(items["vector"].to_numpy())
        layers.append(vectors)
    return layers


def distilled_sessions(run_root: str | Location, model: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The prefixes and ranked lists a distilled model fine-tunes on: its selected sessions
    (`distill_selections`) with their teacher backend's lists (`llm_rankings`), failed ones left out."""
    run_root = Location.of(run_root)
    for table in ("distill_selections", "llm_rankings"):
        if not (run_root / table).is_dir():
            raise FileNotFoundError(f"{run_root / table} not found: run the distill stage before training {model}")
    selections = read_parquet(run_root / "distill_selections").to_pandas()
    selections = selections[selections["model"] == model].sort_values("order")
    rankings = read_parquet(run_root / "llm_rankings").to_pandas()
    rankings = rankings[rankings["status"] != "failed"]
    chosen = selections.merge(rankings, on=["session_id", "teacher", "backend"], how="inner", sort=False)
    splits = read_parquet(run_root / "session_splits").to_pandas().set_index("session_id")
    prefixes = [np.asarray(splits.at[s, "prefix"], np.int64) for s in chosen["session_id"]]
    ranked = np.stack([np.asarray(r, np.int64) for r in chosen["ranked_ids"]]) if len(chosen) else np.zeros((0, 0))
    return prefixes, ranked


def build_recipe(loop_config: dict, rank: int, world: int, shard: Sequences | None = None) -> MultiInterestTraining:
    """The recipe of the configured model, its inputs read from the run's tables; `shard`: this
    worker's training users (reads_training_shard models on Ray Train), else every training user."""
    run_root = loop_config["run_root"]
    spec = parse_model_name(loop_config["model"])
    session_data = is_session_run(run_root)
    if spec.session and not session_data:
        raise ValueError(f"{loop_config['model']}: a session model needs session data "
                         "(data.dataset=sessions-hetrec-ml or sessions-amazon-games)")
    if spec.graph and session_data:
        raise ValueError(f"{loop_config['model']}: the graph models run on the user protocol, not on session data")
    data = (load_protocol(run_root, loop_config["history_fraction"]) if shard is None
            else load_shard_protocol(run_root, loop_config["history_fraction"], shard))
    if spec.distilled:
        distill = loop_config["distill"]
        fine_tuning = {**loop_config["train"], "epochs": distill["epochs"], "patience": distill["patience"],
                       "batch_size": distill["batch_size"], "learning_rate": distill["learning_rate"],
                       "max_samples_per_epoch": 0}
        _, student_weights = load_model(Location.of(run_root) / "models" / spec.student_name)
        prefixes, ranked = distilled_sessions(run_root, loop_config["model"])
        return DistillTraining(loop_config["model"], fine_tuning, data, loop_config["seed"], loop_config["session"],
                               loop_config["max_prefix"], student_weights, prefixes, ranked, rank=rank,
                               world_size=world)
    if spec.session:
        return SessionTraining(loop_config["model"], loop_config["train"], data, loop_config["seed"],
                               loop_config["session"], loop_config["max_prefix"], rank=rank, world_size=world)
    if spec.graph:
        graph = protocol_graph(data)
        return GraphTraining(loop_config["model"], loop_config["train"], data, loop_config["seed"], graph,
                             rank=rank, world_size=world,
                             descriptions=load_descriptions(run_root, graph) if spec.described else None,
                             desc=loop_config["desc"] if spec.described else None)
    clusters = load_clusters(run_root, ids=None if shard is None else shard.user_ids) if spec.aligned else None
    synthesized = load_clusters(run_root, "synthesized_semantic_clusters", "synth_id") if spec.contrastive else None
    if spec.shuffled:  # the random-cluster control: same sizes, semantic content removed
        clusters = shuffled_clusters(clusters, loop_config["seed"]) if clusters is not None else None
        synthesized = shuffled_clusters(synthesized, loop_config["seed"]) if synthesized is not None else None
    synthesized = list(synthesized.values()) if synthesized is not None else None
    warm = loop_config.get("warm_start")
    return MultiInterestTraining(loop_config["model"], loop_config["train"], data, loop_config["seed"],
                                 rank=rank, world_size=world, clusters=clusters,
                                 align=loop_config["align"] if spec.aligned else None,
                                 synthesized_clusters=synthesized,
                                 contrast=loop_config["contrast"] if spec.contrastive else None,
                                 warm_start=(load_model(warm["folder"])[1], np.asarray(warm["item_rows"]))
                                 if warm else None, data_is_shard=shard is not None)


def _train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    # Ray Train logs every report and checkpoint with its full metrics; one epoch line is enough.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("ray.train") or "/ray/train/" in name:  # some use getLogger(__file__)
            logging.getLogger(name).setLevel(logging.WARNING)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    shard = None
    if loop_config["sharded"]:
        batches = ray.train.get_dataset_shard(SHARD_DATASET.format(rank=rank)).iter_batches(
            batch_size=None, batch_format="pyarrow")
        shard = shard_sequences([pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
                                 for batch in batches])
    recipe = build_recipe(loop_config, rank, world, shard)
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = load_training_state(os.path.join(folder, STATE_FILE))
    wrap = ray.train.torch.prepare_model if world > 1 else None
    # train.use_gpu: Ray Train gives each worker a GPU; the model and every batch go on it
    device = ray.train.torch.get_device() if loop_config["train"]["use_gpu"] else None
    recipe.setup(state, wrap_model=wrap, device=device)

    def report(metrics: dict, training_state: dict) -> None:
        if rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(training_state, os.path.join(folder, STATE_FILE))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics, checkpoint=None)

    recipe.train(report)
    recipe.cleanup()


def train_run_name(model_name: str) -> str:
    """The default name of a model's Ray Train run, its folder under <run>/ray_train/."""
    return model_name.replace("+", "-")


def fit_with_ray_train(model_name: str, config: dict, run_root: Location, run_name: str | None = None,
                       warm_start: dict | None = None) -> dict:
    """Train one model on Ray Train; returns the final training state (with the best weights).

    `run_name` (default: the model name) names the Ray Train run under <run>/ray_train/: the same
    name resumes, another one starts afresh. `warm_start` = {"folder": a saved model of another run,
    "item_rows": this run's items' rows in it} starts from its weights (MultiInterestTraining)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    train_config = config["train"]
    storage = Location.of(run_root) / "ray_train"  # a local folder, or a prefix of the run's bucket
    sharded = reads_training_shard(model_name, run_root)
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"model": model_name, "train": train_config, "seed": config["seed"],
                           "align": config["align"], "contrast": config["contrast"], "desc": config["desc"],
                           "session": config["session"], "distill": config["distill"], "max_prefix": config["split"]["session_max_prefix"],
                           "run_root": str(run_root), "warm_start": warm_start, "sharded": sharded,
                           "history_fraction": config["split"]["history_fraction"]},
        scaling_config=ray.train.ScalingConfig(
            num_workers=train_config["num_workers"], use_gpu=train_config["use_gpu"],
            resources_per_worker={"CPU": train_config["cpus_per_worker"]}),
        run_config=ray.train.RunConfig(
            name=run_name or train_run_name(model_name), storage_path=storage.path,
            storage_filesystem=None if storage.is_local else storage.fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=1)),
        # each worker reads its own dataset whole (training_shards), none is split by Ray Train
        datasets=training_shards(run_root, train_config["num_workers"]) if sharded else None,
        dataset_config=ray.train.DataConfig(datasets_to_split=[]) if sharded else None,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{model_name}: Ray Train finished without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        return load_training_state(os.path.join(folder, STATE_FILE))
