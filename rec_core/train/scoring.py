"""Trained models as scorers for the evaluator and the export: one object per model in a run."""

from __future__ import annotations

import numpy as np
import torch

from rec_core.data.splits import Sequences
from rec_core.models.lightgcn import LightGCN
from rec_core.models.multi_interest import Popularity, build_model, pad_histories
from rec_core.models.names import parse_model_name
from rec_core.session.models import build_session_model
from rec_core.storage.location import Location
from rec_core.train.recipe import model_score_fn
from rec_core.train.saved_model import load_model


def model_config(name: str, config: dict) -> dict:
    """What rebuilds model `name` from its weights: the train section, and for a session model the
    prefix length it reads (split.session_max_prefix) and its sizes (the session section)."""
    if not parse_model_name(name).session:
        return config["train"]
    return {**config["train"], "max_history": config["split"]["session_max_prefix"], "session": config["session"]}


def item_counts(train_items: np.ndarray, num_items: int) -> np.ndarray:
    """Every item's number of occurrences in `train_items` (what popularity scores by)."""
    return np.bincount(train_items, minlength=num_items)


class Scorer:
    """score(rows, histories, user_ids) for the evaluator; interests and item vectors for export."""

    def __init__(self, name: str, num_items: int, model_folder: "str | Location | None" = None,
                 train_item_counts: np.ndarray | None = None):
        """`model_folder`: the saved weights of a trained model; `train_item_counts`: popularity's
        scores, every item's number of training interactions (`item_counts`)."""
        self.name = name
        self.num_items = num_items
        if name == "popularity":
            if train_item_counts is None:
                raise ValueError("the popularity scorer needs the training item counts")
            self.popularity = Popularity.from_counts(train_item_counts)
            self.model = None
            return
        saved, weights = load_model(model_folder)
        self.history = saved["history"]
        if parse_model_name(name).graph:  # scores with its frozen user and item vectors, no graph needed
            self.model = LightGCN.for_scoring(weights, saved["train_config"]["gcn_layers"])
            self._score = lambda rows, histories, user_ids: self.model.score_users(user_ids)
            return
        self.max_history = saved["train_config"]["max_history"]
        if parse_model_name(name).session:
            self.model = build_session_model(name, saved["num_items"], saved["train_config"],
                                             saved["train_config"]["session"])
        else:
            self.model = build_model(name, saved["num_items"], saved["train_config"])
        self.model.load_state_dict(weights)
        self.model.eval()
        self._score = model_score_fn(self.model, self.max_history, self.num_items)

    def __call__(self, rows, histories: Sequences, user_ids) -> torch.Tensor:
        if self.model is None:
            return self.popularity.score(len(rows))
        return self._score(rows, histories, user_ids)

    def servable(self, user_ids: np.ndarray) -> np.ndarray:
        """Which users this model can score: all for a history model (it reads the history), those
        with a trained embedding for a graph model (a user too short to split has none)."""
        if isinstance(self.model, LightGCN):
            return np.isin(user_ids, self.model.user_ids.numpy())
        return np.ones(len(user_ids), dtype=bool)

    def item_vectors(self) -> np.ndarray | None:
        return None if self.model is None else self.model.item_vectors().detach().numpy()

    @torch.no_grad()
    def interests(self, histories: Sequences, batch_size: int | None = None) -> np.ndarray | None:
        """[U, K, d] interest vectors of every user of `histories`, `batch_size` users per forward pass
        (None: all in one; the export batches: the extractor's activations of 65k users at once took
        gigabytes)."""
        if self.model is None:
            return None
        if isinstance(self.model, LightGCN):
            return self.model.user_interests(histories.user_ids).numpy()
        parts, step = [], batch_size or max(len(histories), 1)
        for start in range(0, len(histories), step):
            rows = np.arange(start, min(start + step, len(histories)))
            items, mask = pad_histories(histories.items, histories.offsets[rows], histories.offsets[rows + 1],
                                        self.max_history, self.num_items)
            parts.append(self.model.interests(items, mask).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 0, 0), np.float32)
