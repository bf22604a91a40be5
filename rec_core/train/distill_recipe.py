"""The fine-tuning recipe of a distilled student (`<base>+student+distill`, ALKDRec): the trained
student's weights, then epochs over the distilled sessions only with the 3/2/1 rank-band pairwise
loss (rec_core.session.distillation) on each session's ranked list, against uniform negatives.

Model selection as for every model: validation Recall@50 after each epoch, early stopping; the
student as it was before fine-tuning is the first candidate (epoch 0), so a fine-tuning that never
helps on validation returns the student unchanged (the run's manifest then shows best epoch 0)."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from rec_core.data.splits import ProtocolData
from rec_core.models.multi_interest import pad_histories
from rec_core.session.distillation import DistillationObjective
from rec_core.train.recipe import SELECTION_METRIC
from rec_core.train.session_recipe import SessionTraining

log = logging.getLogger(__name__)


class DistillTraining(SessionTraining):
    """`student_weights`: the `<base>+student` model's best state; `prefixes` (one item array per
    distilled session) and `ranked` [sessions, list_length]: the teacher backend's lists.
    `train_config` carries the fine-tuning epochs, patience, batch size and learning rate."""

    def __init__(self, model_name: str, train_config: dict, data: ProtocolData, seed: int, session: dict,
                 max_prefix: int, student_weights: dict, prefixes: list[np.ndarray], ranked: np.ndarray,
                 rank: int = 0, world_size: int = 1):
        super().__init__(model_name, train_config, data, seed, session, max_prefix, rank=rank, world_size=world_size)
        if len(prefixes) == 0:
            raise ValueError(f"{model_name}: no distilled session (every ranking failed or the budget selected none)")
        self.student_weights, self.prefixes, self.ranked = student_weights, prefixes, ranked

    def setup(self, state: dict | None = None, wrap_model=None, device=None) -> None:
        super().setup(state, wrap_model, device)
        if state is None:  # start from the trained student, which is also the first candidate
            self.model_.load_state_dict(self.student_weights)
            self.best_model_state_ = copy.deepcopy(self.model_.state_dict())
            self.best_metric_ = self.validate()[SELECTION_METRIC]
            log.info("%s: the student before fine-tuning: valid %s %.4f", self.model_name, SELECTION_METRIC,
                     self.best_metric_)

    def objective(self):
        return DistillationObjective(self.model_)

    def prepare_examples(self) -> None:
        lengths = np.array([len(p) for p in self.prefixes])
        ends = np.cumsum(lengths)
        self.histories_, self.masks_ = pad_histories(np.concatenate(self.prefixes).astype(np.int64), ends - lengths,
                                                     ends, self.config["max_history"], self.data.num_items)
        self.ranked_ = torch.as_tensor(np.asarray(self.ranked, np.int64))
        log.info("%s: fine-tuning on %d distilled sessions, lists of %d", self.model_name, len(lengths),
                 self.ranked_.shape[1])

    def examples(self) -> int:
        return len(self.ranked_)

    def batch(self, chosen: np.ndarray, crowd_draws: torch.Generator) -> tuple[tuple, dict]:
        index = torch.as_tensor(chosen)
        return (self.histories_[index], self.masks_[index], self.ranked_[index]), {}

    def cleanup(self) -> None:
        super().cleanup()
        self.histories_ = self.masks_ = self.ranked_ = None
