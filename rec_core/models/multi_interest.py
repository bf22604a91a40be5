"""Retrieval models: Popularity, MIND, ComiRec-DR, ComiRec-SA, REMI, SASRec.

All neural models share one interface: `interests(history, mask) -> [B, K, d]` from a right-aligned
history (most recent item last, padding id = num_items), item embeddings shared between input and
output (as in ComiRec), and a retrieval score per item = max over the K interests of the dot
product (the same ranking as ComiRec's per-interest top-N merged by score).

Training loss (ComiRec): the interest closest to the target item is read out (hard, label-aware
attention) and scored against the target and a set of shared, uniformly sampled negatives with a
softmax (sampled softmax; negatives equal to the target are masked, "remove accidental hits").

- MIND (Li et al. 2019) as in ComiRec's code: one shared bilinear map, routing logits drawn from
  N(0, 1) per training step (one fixed draw, stored with the model, at inference), 3 routing
  iterations with squash, a ReLU layer on the capsules.
- ComiRec-DR (Cen et al. 2020): a separate bilinear map per history position and interest,
  routing logits initialised at zero, no ReLU layer.
- ComiRec-SA: additive self-attention with K heads over the (position-aware) history,
  A = softmax(W2 tanh(W1 H)), interests = A H.
- REMI (Xie et al., RecSys 2023, "Rethinking Multi-Interest Learning for Candidate Matching"):
  ComiRec-SA trained with its two additions. Interest-aware hard negatives (IHN): the sampled
  negatives are importance-weighted towards the ideal distribution q(j) ~ exp(beta * s(u, j)) (a
  Monte-Carlo estimate from the uniform samples, weights detached; beta = 0 is plain sampled
  softmax). Routing regularisation (RR): with A the [K, L] routing (attention) matrix of a user,
  C = (A - mean_L A)(A - mean_L A)^T / d, and the loss adds weight * ||diag C||^2 against routing
  collapse (all of an interest's weight on one item). Their code sums RR over the batch; here it is
  averaged, so `train.routing_regularization` does not depend on the batch size.
- SASRec (Kang & McAuley 2018) as public re-evaluations train it best: causal self-attention
  blocks (`train.transformer_blocks`, `train.attention_heads`, `train.dropout`) with learned
  positions; the output at the most recent position is the user's one interest (K = 1 whatever
  `train.num_interests` says), trained with the same many-negative sampled softmax.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rec_core.crowd.contrastive import contrastive_loss
from rec_core.interests.alignment import alignment_loss
from rec_core.models.names import HISTORY_BASES, base_model


class Popularity:
    """Scores every item by its number of training interactions (same for every user)."""

    def fit(self, train_items: np.ndarray, num_items: int) -> "Popularity":
        return self.from_counts(np.bincount(train_items, minlength=num_items))

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> "Popularity":
        """Fitted from every item's count of training interactions (summed over shards of the data)."""
        fitted = cls()
        fitted.counts_ = torch.tensor(np.asarray(counts), dtype=torch.float32)  # a copy: counts may be read-only
        return fitted

    def score(self, batch_size: int) -> torch.Tensor:
        return self.counts_.expand(batch_size, -1)


def squash(vectors: torch.Tensor) -> torch.Tensor:
    norm2 = (vectors ** 2).sum(-1, keepdim=True)
    return norm2 / (1 + norm2) / torch.sqrt(norm2 + 1e-9) * vectors


class MultiInterestModel(nn.Module):
    """Shared parts: item embeddings (padding row last), read-out, sampled-softmax loss, scoring."""

    def __init__(self, num_items: int, dim: int, num_interests: int, max_history: int):
        super().__init__()
        self.num_items, self.dim, self.num_interests, self.max_history = num_items, dim, num_interests, max_history
        self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=num_items)
        nn.init.normal_(self.item_embedding.weight, std=1.0 / math.sqrt(dim))
        with torch.no_grad():
            self.item_embedding.weight[num_items].zero_()

    def interests(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, history: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(interests [B, K, d], routing matrix [B, K, L] or None where the model has none)."""
        return self.interests(history, mask), None

    def weight_negatives(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, S] negative logits as the loss sees them (plain sampled softmax: unchanged)."""
        return logits

    def routing_loss(self, routing: torch.Tensor | None) -> torch.Tensor | float:
        return 0.0

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight[: self.num_items]

    def forward(self, history, mask, targets, negatives, cluster_items=None, cluster_history=None,
                cluster_mask=None, synthesized_clusters=None, align_weight=0.0, align_temperature=0.1,
                contrast_weight=0.0, contrast_temperature=0.1):
        """Sampled-softmax loss of the batch, plus the weighted alignment loss when users' semantic
        clusters are given (`cluster_items` [U, J, N] with the interests computed from the same users'
        clustered items, `cluster_history` / `cluster_mask` [U, L]; rec_core.interests.alignment),
        and the weighted contrastive loss when synthesized users' clusters are."""
        interests, routing = self.encode(history, mask)
        target_vectors = self.item_embedding(targets)  # [B, d]
        closest = torch.einsum("bkd,bd->bk", interests, target_vectors).argmax(1)
        user = interests[torch.arange(len(targets), device=targets.device), closest]  # [B, d]
        positive = (user * target_vectors).sum(-1, keepdim=True)
        negative = user @ self.item_embedding(negatives).T  # [B, S]
        negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([positive, self.weight_negatives(negative)], 1)
        loss = F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))
        loss = loss + self.routing_loss(routing)
        if cluster_items is not None and align_weight > 0:
            cluster_interests = self.interests(cluster_history, cluster_mask)
            loss = loss + align_weight * alignment_loss(cluster_interests, cluster_items, self.item_embedding,
                                                        self.num_items, align_temperature)
        if synthesized_clusters is not None and contrast_weight > 0:
            loss = loss + contrast_weight * contrastive_loss(synthesized_clusters, self.item_embedding,
                                                             self.num_items, contrast_temperature)
        return loss

    @torch.no_grad()
    def score(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, num_items] retrieval scores: max over interests of <interest, item>."""
        interests = self.interests(history, mask)
        return torch.einsum("bkd,nd->bkn", interests, self.item_vectors()).amax(1)


class CapsuleInterests(MultiInterestModel):
    """Dynamic (behaviour-to-interest) routing; MIND and ComiRec-DR differ as documented above."""

    def __init__(self, num_items, dim, num_interests, max_history, routing_iterations=3,
                 shared_bilinear=True, relu_layer=True):
        super().__init__(num_items, dim, num_interests, max_history)
        self.routing_iterations = routing_iterations
        self.shared_bilinear = shared_bilinear
        if shared_bilinear:
            self.bilinear = nn.Linear(dim, dim, bias=False)
        else:
            self.position_bilinear = nn.Parameter(torch.randn(max_history, num_interests * dim, dim) * 0.1)
        self.relu_layer = nn.Sequential(nn.Linear(dim, dim), nn.ReLU()) if relu_layer else None
        # MIND draws its routing logits at random; at inference a fixed draw (part of the model) keeps
        # a user's interests reproducible and independent of the batch it is scored in
        self.register_buffer("inference_logits", torch.randn(num_interests, max_history))

    def interests(self, history, mask):
        batch, length = history.shape
        embedded = self.item_embedding(history)  # [B, L, d]
        if self.shared_bilinear:
            mapped = self.bilinear(embedded).unsqueeze(1).expand(-1, self.num_interests, -1, -1)
            if self.training:
                logits = torch.randn(batch, self.num_interests, length, device=history.device)
            else:
                logits = self.inference_logits[:, -length:].expand(batch, -1, -1)
        else:
            weights = self.position_bilinear[-length:]  # right-aligned histories: last L positions
            mapped = torch.einsum("lod,bld->blo", weights, embedded)
            mapped = mapped.view(batch, length, self.num_interests, self.dim).transpose(1, 2)
            logits = torch.zeros(batch, self.num_interests, length, device=history.device)
        valid = mask.unsqueeze(1)  # [B, 1, L]
        mapped_frozen = mapped.detach()
        for iteration in range(self.routing_iterations):
            weights = torch.softmax(logits, dim=1) * valid  # coupling over interests
            last = iteration == self.routing_iterations - 1
            capsules = squash(torch.einsum("bkl,bkld->bkd", weights, mapped if last else mapped_frozen))
            if not last:
                logits = logits + torch.einsum("bkld,bkd->bkl", mapped_frozen, capsules)
        if self.relu_layer is not None:
            capsules = self.relu_layer(capsules)
        return capsules


class SelfAttentiveInterests(MultiInterestModel):
    """ComiRec-SA: K attention heads over the history with learned position embeddings."""

    def __init__(self, num_items, dim, num_interests, max_history):
        super().__init__(num_items, dim, num_interests, max_history)
        self.position = nn.Parameter(torch.randn(max_history, dim) * 0.02)
        self.attention = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Tanh(), nn.Linear(4 * dim, num_interests))

    def encode(self, history, mask):
        embedded = self.item_embedding(history)  # [B, L, d]
        scores = self.attention(embedded + self.position[-history.shape[1]:])  # [B, L, K]
        scores = scores.masked_fill(~mask.bool().unsqueeze(-1), -1e9)
        weights = torch.softmax(scores, dim=1)
        return torch.einsum("blk,bld->bkd", weights, embedded), weights.transpose(1, 2)

    def interests(self, history, mask):
        return self.encode(history, mask)[0]


class REMI(SelfAttentiveInterests):
    """ComiRec-SA with REMI's interest-aware hard negatives and routing regularisation (see above)."""

    def __init__(self, num_items, dim, num_interests, max_history, hard_negative_beta=1.0,
                 routing_regularization=0.1):
        super().__init__(num_items, dim, num_interests, max_history)
        self.hard_negative_beta, self.routing_regularization = hard_negative_beta, routing_regularization

    def weight_negatives(self, logits):
        with torch.no_grad():  # importance weights N * softmax(beta * s) over the (unmasked) negatives
            count = torch.isfinite(logits).sum(1, keepdim=True).clamp(min=1)
            scaled = torch.where(torch.isfinite(logits), self.hard_negative_beta * logits, logits)  # -inf stays
            log_weights = torch.log_softmax(scaled, dim=1) + torch.log(count.float())
        return logits + log_weights

    def routing_loss(self, routing):
        centred = routing - routing.mean(2, keepdim=True)
        variances = (centred ** 2).sum(2) / self.dim  # diag of C = centred centred^T / d, [B, K]
        return self.routing_regularization * (variances ** 2).sum(1).mean()


class SASRec(MultiInterestModel):
    """One interest from causal self-attention over the history (see above)."""

    def __init__(self, num_items, dim, max_history, blocks=1, heads=1, dropout=0.2):
        super().__init__(num_items, dim, 1, max_history)
        self.position = nn.Embedding(max_history, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim, dropout=dropout, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.heads = heads
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def interests(self, history, mask):
        length = history.shape[1]
        valid = mask.bool()
        x = self.item_embedding(history) * math.sqrt(self.dim) + self.position.weight[-length:]
        x = self.dropout(x) * mask.unsqueeze(-1)
        # position i attends to the items at positions <= i; a padding position only to itself, so
        # no row is fully masked (a NaN there would reach the real rows through the next block)
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).triu(1)
        blocked = causal | (~valid.unsqueeze(1) & ~torch.eye(length, dtype=torch.bool, device=history.device))
        out = self.blocks(x, mask=blocked.repeat_interleave(self.heads, 0))
        return self.norm(out[:, -1:])  # the most recent position (histories are right-aligned)


def build_model(name: str, num_items: int, train_config: dict) -> MultiInterestModel:
    name = base_model(name)
    common = dict(num_items=num_items, dim=train_config["embedding_dim"],
                  num_interests=train_config["num_interests"], max_history=train_config["max_history"])
    if name == "mind":
        return CapsuleInterests(**common, routing_iterations=train_config["routing_iterations"],
                                shared_bilinear=True, relu_layer=True)
    if name == "comirec_dr":
        return CapsuleInterests(**common, routing_iterations=train_config["routing_iterations"],
                                shared_bilinear=False, relu_layer=False)
    if name == "comirec_sa":
        return SelfAttentiveInterests(**common)
    if name == "remi":
        return REMI(**common, hard_negative_beta=train_config["hard_negative_beta"],
                    routing_regularization=train_config["routing_regularization"])
    if name == "sasrec":
        return SASRec(num_items, train_config["embedding_dim"], train_config["max_history"],
                      train_config["transformer_blocks"], train_config["attention_heads"], train_config["dropout"])
    raise ValueError(f"unknown neural model {name!r}; choose from {HISTORY_BASES}")


def pad_histories(flat_items: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int,
                  pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-aligned [B, length] histories from flat[start:end] (last `length` items) and their mask."""
    index = ends[:, None] - length + np.arange(length)[None, :]
    valid = index >= starts[:, None]
    items = np.where(valid, flat_items[np.clip(index, 0, max(len(flat_items) - 1, 0))], pad)
    return torch.as_tensor(items, dtype=torch.long), torch.as_tensor(valid, dtype=torch.float32)
