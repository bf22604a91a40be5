import numpy as np
import torch

from rec_core.alignment import alignment_loss, greedy_assignment, pack_clusters


def test_greedy_assignment_one_to_one_then_merge():
    sim = torch.tensor([[[0.9, 0.1, 0.0],
                         [0.8, 0.7, 0.0],
                         [0.1, 0.2, 0.3],
                         [0.0, 0.95, 0.1]]])
    valid = torch.tensor([[True, True, True, True]])
    # best-first: (3,1)=.95, (0,0)=.9, then row 1 and 2 compete for interest 2: (2,2)=.3; row 1 left over
    # joins its most similar interest (0): a merge
    assert greedy_assignment(sim, valid).tolist() == [[0, 0, 2, 1]]


def test_fewer_clusters_leave_interests_free_and_invalid_clusters_unassigned():
    sim = torch.tensor([[[0.2, 0.9, 0.1], [0.5, 0.5, 0.5]]])
    out = greedy_assignment(sim, torch.tensor([[True, False]]))
    assert out.tolist() == [[1, -1]]


def test_alignment_loss_pulls_interests_toward_cluster_centroids():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(11, 8, padding_idx=10)
    interests = torch.randn(2, 3, 8, requires_grad=True)
    clusters = torch.tensor(pack_clusters(np.array([0, 1]), {0: [[1, 2], [3]], 1: [[4, 5, 6]]}, 3, 4, pad=10))
    assert clusters.shape == (2, 3, 4) and (clusters[1, 1:] == 10).all()
    optimizer = torch.optim.SGD([interests], lr=0.5)
    before = alignment_loss(interests, clusters, embedding, pad=10, temperature=0.1).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss = alignment_loss(interests, clusters, embedding, pad=10, temperature=0.1)
        loss.backward()
        optimizer.step()
    assert loss.item() < before * 0.5


def test_no_clusters_gives_zero_loss_with_gradient_path():
    embedding = torch.nn.Embedding(5, 4, padding_idx=4)
    interests = torch.randn(2, 2, 4, requires_grad=True)
    loss = alignment_loss(interests, torch.full((2, 2, 3), 4), embedding, pad=4, temperature=0.1)
    assert loss.item() == 0.0
    loss.backward()
