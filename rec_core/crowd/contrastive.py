"""Contrastive disentangling of item representations across interests (arXiv 2507.10917).

The semantic clusters of synthesized users (crowd interests) say which items belong to one
interest and which to another interest of the same crowd. For a batch of synthesized users,
each with clusters C_1..C_J (item ids, padded), every item a of a cluster with at least one other
member is an anchor; the other items of its cluster are its positives and the items of the other
clusters of the same synthesized user its negatives (supervised contrastive loss, Khosla et al.
2020, restricted to one synthesized user):

    loss(a) = -1/|P(a)| * sum_{p in P(a)} log( exp(s(a,p)/t) / sum_{k in A(a)} exp(s(a,k)/t) )

with s the cosine of the model's item embeddings, t = `contrast.temperature`, P(a) the positives
and A(a) all other items of the synthesized user. Anchors without a positive or without a negative
(a single-cluster synthesized user) are skipped. The mean over anchors is multiplied by
`contrast.weight` and added to the training loss; serving does not use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(clusters: torch.Tensor, item_embedding: torch.nn.Embedding, pad: int,
                     temperature: float) -> torch.Tensor:
    """clusters [S, J, N] item ids of S synthesized users, padded with `pad` (a row of pads = none)."""
    users, n_clusters, n_items = clusters.shape
    items = clusters.reshape(users, n_clusters * n_items)  # [S, M]
    cluster_of = torch.arange(n_clusters, device=clusters.device).repeat_interleave(n_items).expand(users, -1)
    present = items != pad
    vectors = F.normalize(item_embedding(items), dim=-1)
    logits = vectors @ vectors.transpose(1, 2) / temperature  # [S, M, M]
    others = present.unsqueeze(1) & present.unsqueeze(2)
    others &= ~torch.eye(items.shape[1], dtype=torch.bool, device=items.device)
    same = cluster_of.unsqueeze(1) == cluster_of.unsqueeze(2)
    positives = others & same
    negatives = others & ~same
    anchors = positives.any(-1) & negatives.any(-1)  # [S, M]
    if not anchors.any():
        return item_embedding.weight.sum() * 0.0
    log_prob = logits - torch.logsumexp(logits.masked_fill(~others, -1e9), dim=-1, keepdim=True)
    per_anchor = -(log_prob * positives).sum(-1) / positives.sum(-1).clamp(min=1)
    return per_anchor[anchors].mean()
