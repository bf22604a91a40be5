"""LightGCN (He et al., SIGIR 2020) and `lightgcn+desc`, LightGCN with GaCLLM's graph-hop
descriptions (arXiv 2402.08859) aligned and fused layer by layer.

LightGCN: ID embeddings E_0 of users and items, propagated without weights or non-linearities,
E_l = A_hat E_{l-1} with A_hat = D^-1/2 A D^-1/2 on the graph of rec_core.graph.bipartite, and the
final representation mean(E_0 .. E_L). Trained here with the harness's sampled softmax (the
positive edge's item against shared uniform negatives, accidental hits masked) rather than BPR:
the same loss as every other model in the harness, and the stronger of the two on these data sets
in public re-evaluations; early stopping on validation Recall@50 as for the others.

`lightgcn+desc`: T_l, the frozen text embeddings of every node's layer-l description
(jobs.describe; layer min(l, graph.layers) when there are fewer description layers than
propagation layers), projected to the ID space by one linear map per layer, P_l = T_l W_l. The
alignment loss is GaCLLM's per-layer contrastive alignment: InfoNCE between E_l and P_l of the
batch's nodes (users and target items; at most `desc.nodes_per_batch` of them, drawn by the recipe,
since InfoNCE costs the square of the count), both directions, averaged over layers, weighted by
`desc.weight`. Fusion (the paper fuses per layer; how is not specified), `desc.fusion`:
- `sum` (default): the final representation is mean over l of (E_l + P_l), so the descriptions
  shift every layer's embedding and scoring stays a dot product;
- `none`: the final representation is LightGCN's own, mean over l of E_l; the descriptions act only
  through the alignment loss, as a regulariser that pulls each layer's graph embeddings towards
  their nodes' text (the choice of RLMRec-style alignment; with `sum` the text projections give the
  model a fast way to fit the training pairs, measured to overfit on Amazon Beauty).

Users, valid/test included, are nodes of the graph through their visible interactions (a
valid/test user's history part, never its targets), so they get a propagated embedding without a
target ever being an edge. Serving needs no LLM and no graph: `freeze()` stores the final user and
item vectors (with the user ids) as buffers, which are what a saved model holds and scores with.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def sparse_adjacency(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, size: int) -> torch.Tensor:
    """The symmetric normalised adjacency (rec_core.graph.bipartite.normalized_adjacency) as a CSR
    tensor: CSR x dense is ~4x COO's torch.sparse.mm on CPU. Symmetry is checked here because the
    propagation's backward pass relies on it (SymmetricProduct)."""
    by_row = np.lexsort((cols, rows))
    by_col = np.lexsort((rows, cols))  # the transpose's entries in the same order
    if not (np.array_equal(rows[by_row], cols[by_col]) and np.array_equal(cols[by_row], rows[by_col])
            and np.array_equal(values[by_row], values[by_col])):
        raise ValueError("the adjacency is not symmetric: LightGCN propagates on an undirected graph")
    index = torch.as_tensor(np.stack([rows, cols]), dtype=torch.long)
    coo = torch.sparse_coo_tensor(index, torch.as_tensor(values), (size, size), check_invariants=False)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state", once per process
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.coalesce().to_sparse_csr()


class SymmetricProduct(torch.autograd.Function):
    """A @ x for a constant symmetric sparse A: the gradient with respect to x is A^T @ g = A @ g.
    (torch's own backward of a sparse product builds A's transpose on every call, ~3x the forward.)"""

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, ctx.adjacency @ grad


def info_nce(left: torch.Tensor, right: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of `left` matches row i of `right`, the other rows are negatives."""
    logits = F.normalize(left, dim=-1) @ F.normalize(right, dim=-1).T / temperature
    labels = torch.arange(len(left), device=left.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class LightGCN(nn.Module):
    """`adjacency` None builds a model for scoring only (its frozen vectors come from a state dict)."""

    def __init__(self, user_ids: np.ndarray, num_items: int, dim: int, layers: int,
                 adjacency: torch.Tensor | None = None, descriptions: list[torch.Tensor] | None = None,
                 text_dim: int = 0, desc_weight: float = 0.1, desc_temperature: float = 0.2,
                 desc_fusion: str = "sum"):
        super().__init__()
        self.num_users, self.num_items, self.dim, self.layers = len(user_ids), num_items, dim, layers
        self.embedding = nn.Embedding(self.num_users + num_items, dim)
        nn.init.normal_(self.embedding.weight, std=1.0 / math.sqrt(dim))
        # frozen inputs, rebuilt from the run's tables: buffers (they move with the model to its
        # device) but not part of the saved state
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.described = text_dim > 0
        if self.described:
            self.projections = nn.ModuleList(nn.Linear(text_dim, dim, bias=False) for _ in range(layers + 1))
            for layer, text in enumerate(descriptions):
                self.register_buffer(f"description_{layer}", text, persistent=False)
        if desc_fusion not in ("sum", "none"):
            raise ValueError(f"desc fusion {desc_fusion!r}: expected 'sum' or 'none'")
        self.desc_weight, self.desc_temperature, self.desc_fusion = desc_weight, desc_temperature, desc_fusion
        self.register_buffer("user_ids", torch.as_tensor(np.asarray(user_ids), dtype=torch.long))
        self.register_buffer("user_vectors", torch.zeros(self.num_users, dim))
        self.register_buffer("item_vectors_", torch.zeros(num_items, dim))
        # the graph and the descriptions are built identically on every Ray Train worker: DDP must not
        # broadcast them (it cannot broadcast a sparse tensor at all)
        constants = [name for name, _ in self.named_buffers() if name == "adjacency" or name.startswith("description_")]
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, constants)

    def layer_embeddings(self) -> list[torch.Tensor]:
        """[E_0, ..., E_L], each [users + items, d]."""
        out = [self.embedding.weight]
        for _ in range(self.layers):
            out.append(SymmetricProduct.apply(self.adjacency, out[-1]))
        return out

    @property
    def descriptions(self) -> list[torch.Tensor]:
        """The encoded description of every node, per description layer."""
        return [buffer for name, buffer in self.named_buffers() if name.startswith("description_")]

    def projected(self, layer: int, nodes: torch.Tensor | None = None) -> torch.Tensor:
        text = self.descriptions[min(layer, len(self.descriptions) - 1)]
        return self.projections[layer](text if nodes is None else text[nodes])

    def node_vectors(self, embeddings: list[torch.Tensor], nodes: torch.Tensor | None = None) -> torch.Tensor:
        """The fused final vectors of `nodes` (graph rows; None = every node). Only the rows a batch
        needs are projected: the projections are per node, the propagation is not."""
        if nodes is not None:
            embeddings = [e[nodes] for e in embeddings]
        if self.described and self.desc_fusion == "sum":
            embeddings = [e + self.projected(layer, nodes) for layer, e in enumerate(embeddings)]
        return torch.stack(embeddings).mean(0)

    def forward(self, user_rows: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
                align_nodes: torch.Tensor | None = None) -> torch.Tensor:
        """Sampled softmax of the batch's edges; `align_nodes` (graph rows, default: the batch's users
        and target items) are the nodes of the description alignment."""
        embeddings = self.layer_embeddings()
        final = self.node_vectors(embeddings, torch.cat([user_rows, self.num_users + targets, self.num_users + negatives]))
        users, positives, negative_items = final.split([len(user_rows), len(targets), len(negatives)])
        positive = (users * positives).sum(-1, keepdim=True)
        negative = users @ negative_items.T
        negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([positive, negative], 1)
        loss = F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))
        if self.described and self.desc_weight > 0:
            nodes = align_nodes if align_nodes is not None else torch.unique(torch.cat([user_rows, self.num_users + targets]))
            alignment = torch.stack([info_nce(e[nodes], self.projected(layer, nodes), self.desc_temperature)
                                     for layer, e in enumerate(embeddings)]).mean()
            loss = loss + self.desc_weight * alignment
        return loss

    @torch.no_grad()
    def freeze(self) -> None:
        """Store the final user and item vectors for scoring (called before every validation)."""
        final = self.node_vectors(self.layer_embeddings())
        self.user_vectors.copy_(final[: self.num_users])
        self.item_vectors_.copy_(final[self.num_users:])

    def user_rows(self, user_ids: np.ndarray) -> torch.Tensor:
        ids = torch.as_tensor(np.asarray(user_ids), dtype=torch.long, device=self.user_ids.device)
        rows = torch.searchsorted(self.user_ids, ids).clamp(max=self.num_users - 1)
        missing = self.user_ids[rows] != ids
        if missing.any():
            raise KeyError(f"user {int(ids[missing][0])} has no graph embedding (not in this run's user_splits)")
        return rows

    @torch.no_grad()
    def score_users(self, user_ids: np.ndarray) -> torch.Tensor:
        return self.user_vectors[self.user_rows(user_ids)] @ self.item_vectors_.T

    def item_vectors(self) -> torch.Tensor:
        return self.item_vectors_

    @torch.no_grad()
    def user_interests(self, user_ids: np.ndarray) -> torch.Tensor:
        """[U, 1, d]: one interest per user, as the export writes for every model."""
        return self.user_vectors[self.user_rows(user_ids)].unsqueeze(1)

    @classmethod
    def for_scoring(cls, state: dict, layers: int) -> "LightGCN":
        model = cls(state["user_ids"].numpy(), state["item_vectors_"].shape[0], state["user_vectors"].shape[1], layers)
        frozen = {key: state[key] for key in ("user_ids", "user_vectors", "item_vectors_")}
        model.load_state_dict({**model.state_dict(), **frozen})
        return model.eval()
