"""One training recipe for the neural multi-interest models (setup / train / cleanup).

The same class runs inside a Ray Train worker (jobs.train, with DDP and checkpoints reported to
Ray) and as a plain in-process loop (the benchmark's reference), so the two are measured on
identical code. An epoch visits every (training user, position >= 1) pair once: the history is
the user's items before the position (last `max_history`), the target is the item at it. The pairs
are shuffled per epoch with a seed shared by all workers and dealt out by rank; or, when the data
is this worker's shard of the training users (`data_is_shard`: Ray Train's get_dataset_shard,
rec_core.train.ray_train), each worker shuffles its own pairs (seeded by epoch and rank; with one
worker, the same order as the whole data's) and every worker runs the fewest batches any has.

Model selection: validation Recall@50 after every epoch; the best state is kept, and training
stops after `patience` epochs without improvement (or at `epochs`). The test split is never read.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Callable

import numpy as np
import torch

from rec_core.data.splits import ProtocolData, Sequences
from rec_core.eval.evaluator import evaluate
from rec_core.interests.alignment import alignment_inputs, pack_clusters, packed_shape
from rec_core.models.multi_interest import build_model, pad_histories
from rec_core.models.names import is_aligned, is_contrastive

log = logging.getLogger(__name__)

SELECTION_METRIC = "recall@50"
CROWD_DRAW_STREAM = 1  # salts the random stream of the synthesized users drawn per batch
DROPOUT_STREAM = 2  # salts torch's global stream (dropout) of an epoch

Report = Callable[[dict, dict], None]
"""report(epoch_metrics, training_state): called once per epoch (Ray: ray.train.report)."""


def training_pairs(train: Sequences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(history start, history end, user row) for every position >= 1; the target is train.items[end]."""
    lengths = np.diff(train.offsets)
    pairs_per_user = np.maximum(lengths - 1, 0)
    starts = np.repeat(train.offsets[:-1], pairs_per_user)
    positions = np.concatenate([np.arange(1, n) for n in lengths]) if len(lengths) else np.zeros(0, np.int64)
    ends = starts + positions
    rows = np.repeat(np.arange(len(lengths)), pairs_per_user)
    return starts.astype(np.int64), ends.astype(np.int64), rows.astype(np.int64)


def fewest_across_workers(count: int) -> int:
    """The smallest `count` of all workers of the process group (DDP's, set up by Ray Train)."""
    import torch.distributed as dist

    value = torch.tensor([count], dtype=torch.long)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())


def warm_started(fresh: dict, previous: dict, item_rows: np.ndarray) -> dict:
    """A state dict that is `previous` (another run's weights of the same architecture) except the item
    embedding: item i takes the previous run's row item_rows[i], a new item (-1) keeps its row of
    `fresh` (the seeded initialisation of a full run); the padding row is the last one in both."""
    state = dict(previous)
    table, before = fresh["item_embedding.weight"].clone(), previous["item_embedding.weight"]
    known = torch.as_tensor(item_rows >= 0)
    table[:-1][known] = before[torch.as_tensor(item_rows[item_rows >= 0])]
    table[-1] = before[-1]
    state["item_embedding.weight"] = table
    return state


def on_device(value, device: torch.device):
    """`value` (a tensor, or a tuple / list / dict of them) on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(on_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: on_device(item, device) for key, item in value.items()}
    return value


def model_score_fn(model, max_history: int, num_items: int, device: torch.device = torch.device("cpu")):
    """Evaluator callback: pad each user's history and score all items (on `device`; the scores come
    back to the CPU, where the evaluator ranks)."""

    def score(rows, histories: Sequences, _user_ids):
        items, mask = pad_histories(histories.items, histories.offsets[rows], histories.offsets[rows + 1],
                                    max_history, num_items)
        return model.score(*on_device((items, mask), device)).cpu()

    return score


class MultiInterestTraining:
    """Trains one of the neural models (MIND, ComiRec-DR, ComiRec-SA, REMI, SASRec) on the ComiRec protocol.

    A model named "<model>+align" also gets the alignment loss (rec_core.interests.alignment) on the
    semantic clusters of its training users (`clusters`: user id -> list of item-id lists), with
    `align` = {"weight", "temperature"}. A model with "+contrast" also gets the contrastive loss
    (rec_core.crowd.contrastive) on the clusters of the synthesized users (`synthesized_clusters`: one
    list of item-id lists per synthesized user), `contrast["users_per_batch"]` of them drawn at
    random for every training batch, with `contrast` = {"weight", "temperature", "users_per_batch"}.
    `warm_start` = (another run's best weights, item_rows) starts from those weights (warm_started)
    instead of the random initialisation (an incremental night, rec_core.run.incremental); they are
    validated first and kept unless an epoch beats them."""

    def __init__(self, model_name: str, train_config: dict, data: ProtocolData, seed: int,
                 rank: int = 0, world_size: int = 1, clusters: dict[int, list[list[int]]] | None = None,
                 align: dict | None = None, synthesized_clusters: list[list[list[int]]] | None = None,
                 contrast: dict | None = None, warm_start: tuple[dict, np.ndarray] | None = None,
                 data_is_shard: bool = False):
        self.model_name, self.config, self.data, self.seed = model_name, train_config, data, seed
        self.warm_start, self.data_is_shard = warm_start, data_is_shard
        self.rank, self.world_size = rank, world_size
        self.clusters, self.align = clusters, align
        self.synthesized_clusters, self.contrast = synthesized_clusters, contrast
        if is_aligned(model_name) and (clusters is None or align is None):
            raise ValueError(f"{model_name} needs semantic clusters (run the semantic stage) and align settings")
        if is_contrastive(model_name) and (not synthesized_clusters or contrast is None):
            raise ValueError(f"{model_name} needs synthesized users' clusters (run the synthesize and "
                             "crowd_semantic stages) and contrast settings")

    def setup(self, state: dict | None = None, wrap_model=None, device: torch.device | None = None) -> None:
        """Build model and optimiser; restore `state` (a checkpoint) if given; `wrap_model` e.g. DDP;
        `device` (default the CPU; a Ray Train GPU worker's ray.train.torch.get_device()) holds the
        model, and every batch is moved there."""
        torch.manual_seed(self.seed)
        torch.set_num_threads(max(1, int(self.config["cpus_per_worker"])))
        self.device_ = torch.device(device or "cpu")
        self.model_ = self.build_model().to(self.device_)
        self.optimizer_ = torch.optim.Adam(self.model_.parameters(), lr=self.learning_rate(),
                                           weight_decay=self.config["weight_decay"])
        self.epoch_, self.best_metric_, self.bad_epochs_, self.history_ = 0, -1.0, 0, []
        self.resumed_after_: list[int] = []  # the epochs after which a restart resumed from a checkpoint
        self.best_model_state_ = copy.deepcopy(self.model_.state_dict())
        if state is not None:
            self.model_.load_state_dict(state["model"])
            self.optimizer_.load_state_dict(state["optimizer"])
            self.epoch_, self.best_metric_ = state["epoch"], state["best_metric"]
            self.bad_epochs_, self.history_ = state["bad_epochs"], list(state["history"])
            self.best_model_state_ = state["best_model"]
            self.resumed_after_ = [*state.get("resumed_after", []), self.epoch_]
            log.info("%s: resumed after epoch %d (best %s %.4f)", self.model_name, self.epoch_,
                     SELECTION_METRIC, self.best_metric_)
        elif self.warm_start is not None:  # the warm weights are the candidate to beat
            self.model_.load_state_dict(warm_started(self.model_.state_dict(), *self.warm_start))
            self.best_metric_ = self.validate()[SELECTION_METRIC]
            self.best_model_state_ = copy.deepcopy(self.model_.state_dict())
            log.info("%s: warm start from the previous run's weights (%d of %d items known), valid %s %.4f",
                     self.model_name, int((self.warm_start[1] >= 0).sum()), len(self.warm_start[1]),
                     SELECTION_METRIC, self.best_metric_)
        objective = self.objective()
        self.trainable_ = wrap_model(objective) if wrap_model else objective
        self.prepare_examples()

    def build_model(self):
        return build_model(self.model_name, self.data.num_items, self.config)

    def objective(self):
        """The module whose forward is the training loss (the one DDP wraps): the model itself."""
        return self.model_

    def learning_rate(self) -> float:
        return self.config["learning_rate"]

    def prepare_examples(self) -> None:
        """The training pairs, and the packed clusters of the auxiliary losses."""
        self.pairs_ = training_pairs(self.data.train)
        if len(self.pairs_[0]) == 0:
            raise ValueError("no training pairs: every training user has a single interaction")
        self.packed_clusters_ = None
        if is_aligned(self.model_name):
            clusters, histories, masks = alignment_inputs(
                self.data.train.offsets, self.data.train.items, self.data.train.user_ids, self.clusters,
                self.config["max_history"], self.data.num_items)
            self.packed_clusters_ = torch.as_tensor(clusters)
            self.cluster_histories_, self.cluster_masks_ = torch.as_tensor(histories), torch.as_tensor(masks)
            self.clustered_rows_ = masks.any(1)
            covered = sum(int(u) in self.clusters for u in self.data.train.user_ids)
            log.info("%s: semantic clusters for %d of %d training users", self.model_name, covered,
                     len(self.data.train.user_ids))
        self.packed_synthesized_ = None
        if is_contrastive(self.model_name):
            by_row = dict(enumerate(self.synthesized_clusters))
            self.packed_synthesized_ = torch.as_tensor(pack_clusters(
                np.arange(len(by_row)), by_row, *packed_shape(by_row.values()), self.data.num_items))
            log.info("%s: contrastive loss on %d synthesized users", self.model_name, len(by_row))

    def state(self) -> dict:
        return {"model": self.model_.state_dict(), "optimizer": self.optimizer_.state_dict(),
                "epoch": self.epoch_, "best_metric": self.best_metric_, "bad_epochs": self.bad_epochs_,
                "history": self.history_, "best_model": self.best_model_state_, "resumed_after": self.resumed_after_}

    def finished(self) -> bool:
        return self.epoch_ >= self.config["epochs"] or self.bad_epochs_ >= self.config["patience"]

    def examples(self) -> int:
        return len(self.pairs_[0])

    def batch_size(self) -> int:
        return self.config["batch_size"]

    def batch(self, chosen: np.ndarray, crowd_draws: torch.Generator) -> tuple[tuple, dict]:
        """The forward arguments before the negatives (history, mask, target), and the auxiliary ones."""
        starts, ends, user_rows = self.pairs_
        history, mask = pad_histories(self.data.train.items, starts[chosen], ends[chosen],
                                      self.config["max_history"], self.data.num_items)
        target = torch.as_tensor(self.data.train.items[ends[chosen]], dtype=torch.long)
        return (history, mask, target), self._auxiliary(user_rows[chosen], crowd_draws)

    def run_epoch(self) -> dict:
        """One pass over this worker's share of the training examples."""
        own_shard = self.data_is_shard and self.world_size > 1
        seed = [self.seed, self.epoch_, self.rank] if own_shard else [self.seed, self.epoch_]
        order = np.random.default_rng(seed).permutation(self.examples())
        cap = self.config["max_samples_per_epoch"]
        if own_shard:
            order = order[: max(1, cap // self.world_size)] if cap else order
        else:
            order = order[:cap] if cap else order
            order = order[self.rank:: self.world_size]
        batch_size = self.batch_size()
        # one random stream per purpose: the negatives are the same whichever auxiliary losses a variant adds
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch_ * 10 + self.rank)
        crowd_draws = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, self.epoch_, self.rank, CROWD_DRAW_STREAM]).generate_state(1)[0]))
        # dropout draws from torch's global stream: seeded per epoch too, so an epoch run after a
        # resume from a checkpoint is the epoch an uninterrupted run would have run
        torch.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch_, self.rank, DROPOUT_STREAM])
                              .generate_state(1)[0]))
        self.trainable_.train()
        total_loss, batches, began = 0.0, 0, time.perf_counter()
        # equal batch counts on every rank keep DDP's all-reduce in step
        n_batches = len(order) // batch_size if self.world_size > 1 else -(-len(order) // batch_size)
        if own_shard:  # shards differ in size
            n_batches = fewest_across_workers(n_batches)
        for index in range(n_batches):
            inputs, negatives, auxiliary = self.placed_batch(order[index * batch_size: (index + 1) * batch_size],
                                                             generator, crowd_draws)
            loss = self.trainable_(*inputs, negatives, **auxiliary)
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_.step()
            total_loss += loss.item()
            batches += 1
        seconds = time.perf_counter() - began
        samples = min(n_batches * batch_size, len(order))
        return {"loss": total_loss / max(batches, 1), "samples": samples, "train_seconds": seconds,
                "samples_per_s": samples / seconds if seconds > 0 else 0.0}

    def placed_batch(self, chosen: np.ndarray, generator: torch.Generator, crowd_draws: torch.Generator):
        """(inputs, negatives, auxiliary) of one batch on the model's device; drawn on the CPU from the
        seeded streams, so the draws do not depend on the device."""
        inputs, auxiliary = self.batch(chosen, crowd_draws)
        negatives = torch.randint(0, self.data.num_items, (self.config["num_negatives"],), generator=generator)
        return on_device((inputs, negatives, auxiliary), self.device_)

    def _auxiliary(self, user_rows: np.ndarray, generator: torch.Generator) -> dict:
        """The extra forward arguments of the alignment and contrastive losses for one batch."""
        extra = {}
        if self.packed_clusters_ is not None:
            rows = np.unique(user_rows)  # each user of the batch once: the term is per user, not per pair
            rows = torch.as_tensor(rows[self.clustered_rows_[rows]])
            if len(rows):
                extra.update(cluster_items=self.packed_clusters_[rows], cluster_history=self.cluster_histories_[rows],
                             cluster_mask=self.cluster_masks_[rows], align_weight=self.align["weight"],
                             align_temperature=self.align["temperature"])
        if self.packed_synthesized_ is not None:
            drawn = torch.randint(0, len(self.packed_synthesized_), (self.contrast["users_per_batch"],),
                                  generator=generator)
            extra.update(synthesized_clusters=self.packed_synthesized_[drawn], contrast_weight=self.contrast["weight"],
                         contrast_temperature=self.contrast["temperature"])
        return extra

    def score_fn(self):
        return model_score_fn(self.model_, self.config["max_history"], self.data.num_items, self.device_)

    def validate(self) -> dict:
        self.model_.eval()
        metrics, _ = evaluate(self.score_fn(), self.data.valid, self.data.num_items, ks=(20, 50),
                              batch_size=self.config["eval_batch_size"])
        return metrics

    def train(self, report: Report | None = None) -> dict:
        """Epochs until early stopping; returns the last epoch's metrics."""
        last: dict = {}
        while not self.finished():
            epoch = self.run_epoch()
            valid = self.validate()
            self.epoch_ += 1
            score = valid[SELECTION_METRIC]
            if score > self.best_metric_:
                self.best_metric_, self.bad_epochs_ = score, 0
                self.best_model_state_ = copy.deepcopy(self.model_.state_dict())
            else:
                self.bad_epochs_ += 1
            last = {"epoch": self.epoch_, **epoch, **{f"valid_{k}": v for k, v in valid.items()},
                    "best_valid_" + SELECTION_METRIC: self.best_metric_}
            self.history_.append(last)
            if self.rank == 0:
                log.info("%s epoch %d: loss %.4f, %.0f samples/s, valid recall@50 %.4f (best %.4f)",
                         self.model_name, self.epoch_, epoch["loss"], epoch["samples_per_s"],
                         score, self.best_metric_)
            if report is not None:
                report(last, self.state())
        return last

    def cleanup(self) -> None:
        self.trainable_ = None
        self.pairs_ = None
