"""The distillation loss of ALKDRec: a pairwise loss over the teacher's ranked list.

For a session with ranked list (i_1, ..., i_L) (L = 25 from the LLM or another teacher backend)
and the batch's sampled negatives n_1..n_S (uniform over the catalogue, shared by the batch; a
negative that is in the session's list is masked out):

    loss(s) = sum_r w_r * mean_j softplus(score(s, n_j) - score(s, i_r)) / sum_r w_r

a BPR term per listed item, weighted by its place: w = 3 for places 1-5, 2 for 6-15 and 1 for
16-25 (the paper's bands; places past 25 would weigh 1). The student is trained on all sessions
first (the `+student` model) and then fine-tuned with this loss on the distilled sessions only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BANDS = ((5, 3.0), (15, 2.0))  # (last place of the band, weight); beyond: 1


def band_weights(length: int) -> torch.Tensor:
    weights = torch.ones(length)
    start = 0
    for last, weight in BANDS:
        weights[start:last] = weight
        start = last
    return weights


def ranked_list_loss(session_vectors: torch.Tensor, item_embedding: nn.Embedding, ranked: torch.Tensor,
                     negatives: torch.Tensor) -> torch.Tensor:
    """`session_vectors` [B, d], `ranked` [B, L] item ids, `negatives` [S] item ids."""
    positive = torch.einsum("bd,bld->bl", session_vectors, item_embedding(ranked))  # [B, L]
    negative = session_vectors @ item_embedding(negatives).T  # [B, S]
    pairs = F.softplus(negative[:, None, :] - positive[:, :, None])  # [B, L, S]
    in_list = (negatives[None, None, :] == ranked[:, :, None]).any(1)  # [B, S]
    keep = (~in_list).float()[:, None, :]
    per_place = (pairs * keep).sum(-1) / keep.sum(-1).clamp(min=1)
    weights = band_weights(ranked.shape[1]).to(per_place.device)
    return (per_place * weights).sum(1).mean() / weights.sum()


class DistillationObjective(nn.Module):
    """The loss as a module around a session model (so DDP wraps what computes it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, history, mask, ranked, negatives):
        session = self.model.interests(history, mask)[:, 0]
        return ranked_list_loss(session, self.model.item_embedding, ranked, negatives)
