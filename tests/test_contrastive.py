import math

import torch
import torch.nn.functional as F

from rec_core.crowd.contrastive import contrastive_loss


def reference_loss(clusters, embedding, pad, temperature):
    """The formula of rec_core.crowd.contrastive, one anchor at a time."""
    losses = []
    for user in clusters.tolist():
        members = [(j, i) for j, cluster in enumerate(user) for i in cluster if i != pad]
        for a, (cluster_a, item_a) in enumerate(members):
            others = [(j, i) for b, (j, i) in enumerate(members) if b != a]
            positives = [i for j, i in others if j == cluster_a]
            if not positives or len(positives) == len(others):
                continue
            cos = lambda x, y: F.cosine_similarity(embedding.weight[x], embedding.weight[y], dim=0).item()
            denominator = sum(math.exp(cos(item_a, i) / temperature) for _, i in others)
            losses.append(-sum(math.log(math.exp(cos(item_a, p) / temperature) / denominator)
                               for p in positives) / len(positives))
    return sum(losses) / len(losses)


def test_loss_matches_the_formula_anchor_by_anchor():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(13, 6, padding_idx=12)
    clusters = torch.tensor([[[0, 1, 2], [3, 4, 12], [5, 12, 12]],  # item 5 alone: negative only
                             [[6, 7, 12], [12, 12, 12], [12, 12, 12]],  # one cluster: no anchor
                             [[8, 9, 12], [10, 11, 12], [12, 12, 12]]])
    got = contrastive_loss(clusters, embedding, pad=12, temperature=0.5).item()
    assert abs(got - reference_loss(clusters, embedding, 12, 0.5)) < 1e-4


def test_training_pulls_clusters_together_and_apart():
    torch.manual_seed(1)
    embedding = torch.nn.Embedding(9, 8, padding_idx=8)
    clusters = torch.tensor([[[0, 1, 2, 3], [4, 5, 6, 7]]])
    optimizer = torch.optim.Adam(embedding.parameters(), lr=0.05)
    before = contrastive_loss(clusters, embedding, 8, 0.1).item()
    for _ in range(100):
        optimizer.zero_grad()
        loss = contrastive_loss(clusters, embedding, 8, 0.1)
        loss.backward()
        optimizer.step()
    assert loss.item() < before * 0.5
    vectors = F.normalize(embedding.weight[:8], dim=-1)
    similarity = vectors @ vectors.T
    within = (similarity[:4, :4].sum() - 4) / 12
    across = similarity[:4, 4:].mean()
    assert within > across + 0.5


def test_no_anchor_gives_zero_loss_and_finite_gradients():
    embedding = torch.nn.Embedding(5, 4, padding_idx=4)
    loss = contrastive_loss(torch.tensor([[[0, 1], [4, 4]]]), embedding, pad=4, temperature=0.1)
    assert loss.item() == 0.0
    loss.backward()
    mixed = contrastive_loss(torch.tensor([[[0, 1], [2, 4]], [[3, 4], [4, 4]]]), embedding, pad=4, temperature=0.1)
    mixed.backward()
    assert torch.isfinite(embedding.weight.grad).all()
