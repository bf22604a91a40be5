import numpy as np
import pytest
import torch

from rec_core.interests.alignment import alignment_loss, optimal_assignment, pack_clusters


def test_assignment_is_the_optimal_one_to_one_match_then_merge():
    sim = torch.tensor([[[0.9, 0.8, 0.0],
                         [0.85, 0.1, 0.0],
                         [0.1, 0.2, 0.3],
                         [0.0, 0.7, 0.1]]])
    valid = torch.tensor([[True, True, True, True]])
    # best-first would take (0,0)=.9 and leave row 1 with .1; the optimum is (0,1)+(1,0)+(2,2) = 1.95
    # against (0,0)+(3,1)+(2,2) = 1.9; row 3 is left over and joins its most similar interest (1): a merge
    assert optimal_assignment(sim, valid).tolist() == [[1, 0, 2, 1]]


@pytest.mark.parametrize("shape", [(3, 4), (4, 4), (7, 8)])  # (7, 8): beyond enumeration, scipy
def test_assignment_matches_brute_force_on_random_users(shape):
    from itertools import permutations
    generator = torch.Generator().manual_seed(1)
    n_clusters, n_interests = shape
    sim = torch.rand(30, n_clusters, n_interests, generator=generator) * 2 - 1
    valid = torch.rand(30, n_clusters, generator=generator) > 0.3
    valid[:, :2] &= torch.rand(30, 2, generator=generator) > 0.5  # keep brute force small at (7, 8)
    out = optimal_assignment(sim, valid)
    for row in range(30):
        clusters = valid[row].nonzero().flatten().tolist()
        best = max((sum(sim[row, c, k].item() for c, k in zip(clusters, ks)) for ks in
                    permutations(range(n_interests), len(clusters))), default=0.0)
        got = sum(sim[row, c, out[row, c]].item() for c in clusters)
        assert abs(got - best) < 1e-6
        assert len(set(out[row, clusters].tolist())) == len(clusters)  # one-to-one when J <= K
        assert (out[row, ~valid[row]] == -1).all()


def test_fewer_clusters_leave_interests_free_and_invalid_clusters_unassigned():
    sim = torch.tensor([[[0.2, 0.9, 0.1], [0.5, 0.5, 0.5]]])
    out = optimal_assignment(sim, torch.tensor([[True, False]]))
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


@pytest.mark.parametrize("n_clusters,n_interests", [(6, 4), (5, 3), (9, 4)])  # (9, 4): the scipy path
def test_padded_clusters_beyond_k_match_scipy_hungarian(n_clusters, n_interests):
    """max_clusters > K with padding rows: a padding row must never take an interest from a valid cluster."""
    from scipy.optimize import linear_sum_assignment

    generator = torch.Generator().manual_seed(7)
    users = 200
    sim = torch.rand(users, n_clusters, n_interests, generator=generator) * 2 - 1
    valid = torch.rand(users, n_clusters, generator=generator) > 0.5
    out = optimal_assignment(sim, valid)
    for row in range(users):
        clusters = valid[row].nonzero().flatten().numpy()
        assert (out[row, ~valid[row]] == -1).all()
        if len(clusters) == 0:
            continue
        matched, interests = linear_sum_assignment(sim[row, clusters].numpy(), maximize=True)
        assert torch.equal(out[row, clusters[matched]], torch.as_tensor(interests)), row
        if len(clusters) <= n_interests:
            assert len(set(out[row, clusters].tolist())) == len(clusters)  # one-to-one
        leftover = np.setdiff1d(clusters, clusters[matched])  # more clusters than interests: they merge
        assert torch.equal(out[row, leftover], sim[row, leftover].argmax(-1))
