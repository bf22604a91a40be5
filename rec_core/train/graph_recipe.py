"""The training recipe of the graph models (`lightgcn`, `lightgcn+desc`): MultiInterestTraining's
setup / train / cleanup, model selection and checkpoints, with the examples and the model of the
graph. An epoch visits every distinct edge (user, item) of the visible graph once
(rec_core.graph.bipartite: training sequences and valid/test histories, never a target), in batches
of `train.gcn_batch_size`, each propagating the whole graph (LightGCN's full-graph training)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from rec_core.data.splits import ProtocolData
from rec_core.graph.bipartite import BipartiteGraph, normalized_adjacency
from rec_core.models.lightgcn import LightGCN, sparse_adjacency
from rec_core.models.names import is_described
from rec_core.train.recipe import MultiInterestTraining

log = logging.getLogger(__name__)


class GraphTraining(MultiInterestTraining):
    """`descriptions`: per description layer, [users + items, text dim] text embeddings in graph
    node order (users by row, then items); required for `lightgcn+desc`, with `desc` = {"weight",
    "temperature", "nodes_per_batch", "fusion"}."""

    def __init__(self, model_name: str, train_config: dict, data: ProtocolData, seed: int, graph: BipartiteGraph,
                 rank: int = 0, world_size: int = 1, descriptions: list[np.ndarray] | None = None,
                 desc: dict | None = None):
        super().__init__(model_name, train_config, data, seed, rank=rank, world_size=world_size)
        self.graph, self.descriptions, self.desc = graph, descriptions, desc
        if is_described(model_name) and (not descriptions or desc is None):
            raise ValueError(f"{model_name} needs the graph descriptions (run the describe stage) and desc settings")

    def build_model(self):
        adjacency = sparse_adjacency(*normalized_adjacency(self.graph))
        texts = [torch.as_tensor(layer) for layer in self.descriptions] if is_described(self.model_name) else None
        return LightGCN(self.graph.user_ids, self.graph.num_items, self.config["embedding_dim"],
                        self.config["gcn_layers"], adjacency, texts, texts[0].shape[1] if texts else 0,
                        **({"desc_weight": self.desc["weight"], "desc_temperature": self.desc["temperature"],
                            "desc_fusion": self.desc["fusion"]} if texts else {}))

    def learning_rate(self) -> float:
        return self.config["gcn_learning_rate"] or self.config["learning_rate"]

    def prepare_examples(self) -> None:
        self.edges_ = self.graph.edges()
        if len(self.edges_[0]) == 0:
            raise ValueError("no training edges: the graph has no visible interaction")
        log.info("%s: %d users, %d items, %d edges", self.model_name, self.graph.num_users, self.graph.num_items,
                 len(self.edges_[0]))

    def examples(self) -> int:
        return len(self.edges_[0])

    def batch_size(self) -> int:
        return self.config["gcn_batch_size"]

    def batch(self, chosen: np.ndarray, crowd_draws: torch.Generator) -> tuple[tuple, dict]:
        """The batch's edges; for lightgcn+desc also the alignment nodes: the batch's users and target
        items, `desc.nodes_per_batch` of them drawn from the auxiliary stream when there are more."""
        user_rows, items = (torch.as_tensor(column[chosen]) for column in self.edges_)
        if not is_described(self.model_name):
            return (user_rows, items), {}
        nodes = torch.unique(torch.cat([user_rows, self.graph.num_users + items]))
        if len(nodes) > self.desc["nodes_per_batch"]:
            nodes = nodes[torch.randperm(len(nodes), generator=crowd_draws)[: self.desc["nodes_per_batch"]]]
        return (user_rows, items), {"align_nodes": nodes}

    def score_fn(self):
        self.model_.freeze()
        return lambda rows, histories, user_ids: self.model_.score_users(user_ids).cpu()

    def cleanup(self) -> None:
        super().cleanup()
        self.edges_ = None
