"""The user-item graph (no target is an edge, newest-first CSR, deterministic sampling), the layer
texts and prompts of the graph-hop descriptions, answer validation, the encoder aggregator, the
node budget and the description diagnostic; LightGCN and lightgcn+desc train and score."""

import json

import numpy as np
import pytest
import torch

from jobs.describe import llm_items_probe
from rec_core.data.splits import build_protocol, split_users
from rec_core.eval.evaluator import evaluate
from rec_core.graph.bipartite import ITEM, USER, graph_from_visible, normalized_adjacency, sample_neighbours, visible_graph
from rec_core.graph.descriptions import (FAILED, OK, REPAIRED, description_schema, label_probe, mix_embeddings,
                                         node_prompt, select_nodes, split_budget, validate_description)
from rec_core.models.lightgcn import LightGCN
from rec_core.models.multi_interest import Popularity
from rec_core.run.config import default_config
from rec_core.train.graph_recipe import GraphTraining
from tests.test_models import clustered_interactions

TRAIN = {**default_config()["train"], "embedding_dim": 16, "num_negatives": 64, "cpus_per_worker": 1,
         "gcn_layers": 2, "gcn_batch_size": 256, "learning_rate": 0.01, "epochs": 8, "patience": 8}


def protocol_and_graph(seed=0, **kwargs):
    frame, n_items = clustered_interactions(**kwargs)
    splits, _ = split_users(frame, seed=seed)
    return frame, splits, n_items, build_protocol(frame, splits, n_items), visible_graph(frame, splits, n_items, 0.8)


def edge_set(graph):
    rows, items = graph.edges()
    return {(int(graph.user_ids[r]), int(i)) for r, i in zip(rows, items)}


def test_graph_holds_training_sequences_and_histories_never_a_target():
    frame, splits, n_items, data, graph = protocol_and_graph()
    edges = edge_set(graph)
    for evaluation in (data.valid, data.test):
        for row, user in enumerate(evaluation.user_ids):
            assert {(int(user), int(i)) for i in evaluation.histories.sequence(row)} <= edges
            # a target that is not also in the user's history is never an edge
            history = set(evaluation.histories.sequence(row).tolist())
            for item in evaluation.targets.sequence(row):
                if int(item) not in history:
                    assert (int(user), int(item)) not in edges
    for row, user in enumerate(data.train.user_ids):
        assert {(int(user), int(i)) for i in data.train.sequence(row)} <= edges
    # and changing every valid/test target leaves the graph, hence every embedding, unchanged
    changed = frame.copy()
    for evaluation in (data.valid, data.test):
        for row, user in enumerate(evaluation.user_ids):
            index = changed.index[changed["user_id"] == user]
            cut = len(evaluation.histories.sequence(row))
            changed.loc[index[cut:], "item_id"] = (changed.loc[index[cut:], "item_id"] + 7) % n_items
    again = visible_graph(changed, splits, n_items, 0.8)
    assert np.array_equal(again.user_items, graph.user_items) and np.array_equal(again.item_users, graph.item_users)


def test_csr_lists_neighbours_newest_first_both_ways():
    # user 5: items 0 (t=1), 1 (t=3), 2 (t=2); user 9: item 1 (t=5), 2 (t=2, later in its sequence)
    graph = graph_from_visible(np.array([9, 5, 7]), users=np.array([5, 5, 5, 9, 9]), items=np.array([0, 1, 2, 1, 2]),
                               times=np.array([1, 3, 2, 5, 2]), num_items=4)
    assert graph.user_ids.tolist() == [5, 7, 9]
    assert graph.neighbours(USER, 0).tolist() == [1, 2, 0]
    assert graph.neighbours(USER, 1).tolist() == [] and graph.neighbours(USER, 2).tolist() == [1, 2]
    assert graph.neighbours(ITEM, 1).tolist() == [2, 0]  # user 9 at t=5, then user 5 at t=3
    assert graph.neighbours(ITEM, 2).tolist() == [2, 0]  # equal times: the later sequence position first
    assert graph.neighbours(ITEM, 3).tolist() == [] and graph.degree(ITEM).tolist() == [1, 2, 2, 0]
    with pytest.raises(KeyError, match="user 6"):
        graph.user_row(np.array([5, 6]))
    rows, cols, values, size = normalized_adjacency(graph)
    assert size == 7 and len(rows) == 2 * 5
    dense = np.zeros((size, size))
    dense[rows, cols] = values
    assert np.allclose(dense, dense.T) and np.isclose(dense[0, 3 + 1], 1 / np.sqrt(3 * 2))


def test_neighbour_sampling_is_deterministic_recent_first_and_varies_by_layer():
    users = np.zeros(30, np.int64)
    graph = graph_from_visible(np.array([0]), users, np.arange(30), np.arange(30), num_items=30)
    sample = sample_neighbours(graph, USER, 0, layer=1, k=10, seed=0)
    assert len(sample) == 10 and len(set(sample.tolist())) == 10
    assert sample[:5].tolist() == [29, 28, 27, 26, 25]  # the ceil(k/2) most recent, then older ones newest first
    assert list(sample[5:]) == sorted(sample[5:], reverse=True) and max(sample[5:]) < 25
    assert np.array_equal(sample, sample_neighbours(graph, USER, 0, layer=1, k=10, seed=0))
    others = [tuple(sample_neighbours(graph, USER, 0, layer=layer, k=10, seed=0)) for layer in range(2, 8)]
    assert any(o != tuple(sample) for o in others)
    assert sample_neighbours(graph, USER, 0, layer=1, k=40, seed=0).tolist() == list(range(29, -1, -1))


def test_prompt_length_is_bounded_whatever_the_degree():
    long_text = "word " * 500
    for degree in (0, 3, 10):
        prompt = node_prompt(USER, long_text, [long_text] * degree, own_chars=400, neighbour_chars=160)
        assert len(prompt) <= 400 + 10 * (160 + 8) + 80
    prompt = node_prompt(ITEM, "A shampoo", ["user one", "user two"], 400, 160)
    assert prompt == "Current description: A shampoo\nUsers who engaged with the item:\n1. user one\n2. user two"
    assert json.loads(description_schema(300))["properties"]["description"]["maxLength"] == 300


@pytest.mark.parametrize("output, status, reason", [
    ('{"description": "Likes hair care and fragrances for daily use."}', OK, ""),
    ("not json", REPAIRED, "not JSON"),
    ('{"profile": "x"}', REPAIRED, "no description string"),
    ('{"description": "   "}', REPAIRED, "empty"),
    ('{"description": "' + "a" * 301 + '"}', REPAIRED, "over-long"),
    ('{"description": "12345 678 !!! ???"}', REPAIRED, "not text"),
    ('{"description": "' + "great " * 12 + '"}', REPAIRED, "repeated"),
])
def test_every_answer_is_validated_and_repairs_keep_the_previous_text(output, status, reason):
    got_status, text, detail = validate_description(output, "previous text", max_chars=300)
    assert got_status == status and reason in detail
    if status == REPAIRED:
        assert text == "previous text"
    else:
        assert text == "Likes hair care and fragrances for daily use." and FAILED != got_status


def test_encoder_aggregator_mixes_own_and_neighbour_mean():
    own = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    others = np.array([[0.0, 1.0], [0.0, 3.0], [1.0, 0.0]], np.float32)
    mixed = mix_embeddings(own, [np.array([0, 1]), np.array([], np.int64)], others, mix=0.5)
    expected = 0.5 * own[0] + 0.5 * others[:2].mean(0)
    assert np.allclose(mixed[0], expected / np.linalg.norm(expected))
    assert np.allclose(mixed[1], own[1])  # no neighbours: keeps its own embedding
    assert np.allclose(mix_embeddings(own, [np.array([2]), np.array([2])], others, mix=0.0), own)


def test_node_budget_is_seeded_stable_and_split_by_node_counts():
    ids = np.arange(100)
    chosen = select_nodes(USER, ids, 10, seed=0)
    assert chosen.sum() == 10 and np.array_equal(chosen, select_nodes(USER, ids, 10, seed=0))
    # a node keeps its place when others join: the budget among a superset still ranks by the same hash
    grown = select_nodes(USER, np.arange(200), 20, seed=0)
    assert set(np.flatnonzero(chosen)) <= set(np.flatnonzero(grown))
    assert not np.array_equal(chosen, select_nodes(USER, ids, 10, seed=1))
    assert select_nodes(ITEM, ids, None, seed=0).all()
    assert split_budget(0, 30, 70) == (None, None) and split_budget(100, 30, 70) == (None, None)
    assert split_budget(10, 30, 70) == (3, 7)


def test_label_probe_separates_meaningful_embeddings_from_chance():
    rng = np.random.default_rng(0)
    labels = [["a"], ["b"], ["c"]] * 20
    centres = np.eye(3)
    vectors = np.stack([centres["abc".index(item[0])] + 0.3 * rng.normal(size=3) for item in labels])
    probe = label_probe(vectors, labels, seed=0)
    assert probe["items"] == 60 and probe["accuracy"] > 0.9 and probe["shuffled"] < 0.6
    assert probe["majority"] == pytest.approx(1 / 3, abs=1e-4)
    assert label_probe(vectors, [[] for _ in labels], seed=0)["accuracy"] is None


def test_label_probe_is_the_cosine_to_each_leave_one_out_centroid():
    """Against a loop over items: one big category and small ones, where a centroid left unnormalised
    (the mean of few vectors is long) would draw every prediction to the small categories."""
    rng = np.random.default_rng(3)
    labels = [["big"]] * 30 + [[f"small{i % 6}", "big"] if i % 4 == 0 else [f"small{i % 6}"] for i in range(18)]
    vectors = rng.normal(size=(len(labels), 5)) + np.where([[lab[0] == "big"] for lab in labels], 0.8, 0.0)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    names = sorted({lab for item in labels for lab in item})
    hit = []
    for i, item in enumerate(labels):
        best, chosen = -np.inf, None
        for name in names:
            members = [j for j, other in enumerate(labels) if other[0] == name and j != i]
            if not members:
                continue
            centre = unit[members].sum(0)
            score = unit[i] @ centre / np.linalg.norm(centre)
            if score > best:
                best, chosen = score, name
        hit.append(chosen in item)
    probe = label_probe(vectors, labels, seed=0)
    assert probe["accuracy"] == pytest.approx(sum(hit) / len(labels), abs=1e-4)
    assert probe["majority"] == pytest.approx((30 + 5) / 48, abs=1e-4)  # "big", carried by 30 + 5 items
    # scored on a subset: the same centroids (every item), the average over the subset only
    scored = np.arange(len(labels)) % 3 == 0
    subset = label_probe(vectors, labels, seed=0, scored=scored)
    assert subset["items"] == scored.sum()
    assert subset["accuracy"] == pytest.approx(np.mean(np.array(hit)[scored]), abs=1e-4)
    assert subset["majority"] == pytest.approx(np.mean(["big" in labels[i] for i in np.flatnonzero(scored)]), abs=1e-4)
    assert label_probe(vectors, labels, seed=0, scored=np.zeros(len(labels), bool))["accuracy"] is None


def test_the_llm_items_probe_scores_the_budget_items_with_their_descriptions_and_with_the_mix():
    """A budget of 12 of 60 items whose LLM descriptions carry no category: the probe on them finds
    that, against the encoder's mix of the same inputs (which does)."""
    rng = np.random.default_rng(1)
    labels = [["a"], ["b"], ["c"]] * 20
    meaningful = np.stack([np.eye(3)["abc".index(item[0])] + 0.3 * rng.normal(size=3) for item in labels])
    chosen = np.zeros(len(labels), bool)
    chosen[rng.choice(len(labels), 12, replace=False)] = True
    written = meaningful.copy()
    written[chosen] = rng.normal(size=(12, 3))  # the LLM's descriptions, embedded
    embeddings = [(0, {ITEM: meaningful}), (1, {ITEM: written})]
    probe = llm_items_probe(embeddings, {1: meaningful[chosen]}, chosen, labels, seed=0)
    assert set(probe) == {"layer_1"}  # layer 0 has no LLM text
    layer = probe["layer_1"]
    assert layer["items"] == 12
    assert layer["llm"] == label_probe(written, labels, 0, scored=chosen)["accuracy"]
    assert layer["embedding_mix"] == label_probe(meaningful, labels, 0, scored=chosen)["accuracy"] > 0.9
    assert layer["llm"] < 0.7
    assert llm_items_probe(embeddings, {}, chosen, labels, seed=0) == {}


def group_descriptions(graph, n_groups=4, group_size=40, noise=0.5, seed=0):
    """Text embeddings that know each item's group (and a user's mix of groups), plus noise."""
    rng = np.random.default_rng(seed)
    items = np.eye(n_groups)[np.arange(graph.num_items) // group_size] + noise * rng.normal(size=(graph.num_items, n_groups))
    users = np.stack([items[graph.neighbours(USER, row)].mean(0) if graph.degree(USER)[row] else np.zeros(n_groups)
                      for row in range(graph.num_users)])
    return [np.concatenate([users, items]).astype(np.float32)]


@pytest.mark.parametrize("name", ["lightgcn", "lightgcn+desc"])
def test_graph_models_learn_beyond_popularity_and_score_from_frozen_vectors(name):
    _, _, n_items, data, graph = protocol_and_graph()
    described = name.endswith("+desc")
    if described:
        with pytest.raises(ValueError, match="needs the graph descriptions"):
            GraphTraining(name, TRAIN, data, 0, graph)
    recipe = GraphTraining(name, TRAIN, data, 0, graph, descriptions=group_descriptions(graph) if described else None,
                           desc={"weight": 0.1, "temperature": 0.2, "nodes_per_batch": 64, "fusion": "sum"} if described else None)
    recipe.setup()
    assert recipe.examples() == len(edge_set(graph))
    last = recipe.train()
    popularity = Popularity().fit(data.train.items, n_items)
    pop_metrics, _ = evaluate(lambda rows, h, u: popularity.score(len(rows)), data.valid, n_items, ks=[20])
    assert last["valid_recall@20"] > pop_metrics["recall@20"] + 0.1, (last, pop_metrics)
    # the saved state scores on its own: no graph, no descriptions, the same figures
    recipe.model_.load_state_dict(recipe.best_model_state_)
    scorer = LightGCN.for_scoring(recipe.best_model_state_, TRAIN["gcn_layers"])
    assert not hasattr(scorer, "projections")
    users = data.test.user_ids
    assert torch.allclose(scorer.score_users(users), recipe.model_.score_users(users))
    best, _ = evaluate(lambda rows, h, u: scorer.score_users(u), data.valid, n_items, ks=[50])
    assert best["recall@50"] == pytest.approx(recipe.best_metric_)
    assert scorer.user_interests(users[:3]).shape == (3, 1, TRAIN["embedding_dim"])
    with pytest.raises(KeyError, match="no graph embedding"):
        scorer.score_users(np.array([10 ** 6]))


def plain_and_described(**desc) -> tuple:
    """LightGCN and lightgcn+desc (dim 8, 2 layers) with the same initial ID embeddings."""
    _, _, _, _, graph = protocol_and_graph(n_users=60)
    texts = [torch.as_tensor(t) for t in group_descriptions(graph)]
    from rec_core.graph.bipartite import normalized_adjacency as adjacency_of
    from rec_core.models.lightgcn import sparse_adjacency

    adjacency = sparse_adjacency(*adjacency_of(graph))
    torch.manual_seed(0)
    plain = LightGCN(graph.user_ids, graph.num_items, 8, 2, adjacency)
    torch.manual_seed(0)
    return graph, plain, LightGCN(graph.user_ids, graph.num_items, 8, 2, adjacency, texts, texts[0].shape[1], **desc)


def test_description_alignment_at_weight_zero_changes_only_the_fusion():
    _, plain, described = plain_and_described(desc_weight=0.0)
    for projection in described.projections:
        torch.nn.init.zeros_(projection.weight)
    users, targets, negatives = torch.tensor([0, 1]), torch.tensor([3, 4]), torch.arange(20)
    assert torch.allclose(plain(users, targets, negatives), described(users, targets, negatives))
    described.desc_weight = 0.5
    assert described(users, targets, negatives) > plain(users, targets, negatives)


def test_description_fusion_none_scores_as_lightgcn_and_aligns_only():
    graph, plain, aligned = plain_and_described(desc_weight=0.0, desc_fusion="none")
    # the projections are random (not zero): with fusion none they still leave the scores alone
    users, targets, negatives = torch.tensor([0, 1]), torch.tensor([3, 4]), torch.arange(20)
    assert torch.allclose(plain(users, targets, negatives), aligned(users, targets, negatives))
    plain.freeze(), aligned.freeze()
    assert torch.allclose(plain.score_users(graph.user_ids[:5]), aligned.score_users(graph.user_ids[:5]))
    # the alignment loss still trains the projections and pulls the graph embeddings
    aligned.desc_weight = 0.5
    loss = aligned(users, targets, negatives)
    assert loss > plain(users, targets, negatives)
    loss.backward()
    assert aligned.projections[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="fusion 'mean'"):
        plain_and_described(desc_fusion="mean")


def test_propagation_gradient_equals_torchs_sparse_product_and_asymmetry_is_refused():
    """SymmetricProduct's backward (A @ g) is torch's own gradient of A @ x for the symmetric
    adjacency; an asymmetric one is refused when built."""
    from rec_core.graph.bipartite import normalized_adjacency as adjacency_of
    from rec_core.models.lightgcn import SymmetricProduct, sparse_adjacency

    _, _, _, _, graph = protocol_and_graph(n_users=60)
    rows, cols, values, size = adjacency_of(graph)
    csr = sparse_adjacency(rows, cols, values, size)
    coo = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, cols])), torch.as_tensor(values), (size, size),
                                  check_invariants=False)
    weights = torch.randn(size, 8, generator=torch.Generator().manual_seed(0))
    ours = weights.clone().requires_grad_()
    theirs = weights.clone().requires_grad_()
    upstream = torch.randn(size, 8, generator=torch.Generator().manual_seed(1))
    (SymmetricProduct.apply(csr, SymmetricProduct.apply(csr, ours)) * upstream).sum().backward()
    (torch.sparse.mm(coo, torch.sparse.mm(coo, theirs)) * upstream).sum().backward()
    assert torch.allclose(ours.grad, theirs.grad, atol=1e-6) and ours.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="not symmetric"):
        sparse_adjacency(rows[: len(rows) // 2], cols[: len(cols) // 2], values[: len(values) // 2], size)


def test_a_graph_model_trains_under_ddp_without_broadcasting_its_sparse_graph(tmp_path):
    """train.num_workers > 1 wraps the model in DDP, which broadcasts buffers and cannot broadcast a
    sparse one: the graph and the descriptions are left out of its synchronisation (one process
    here, which builds DDP the same way)."""
    import torch.distributed as dist

    _, plain, described = plain_and_described()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for model in (plain, described):
            wrapped = torch.nn.parallel.DistributedDataParallel(model)
            wrapped(torch.tensor([0, 1]), torch.tensor([3, 4]), torch.arange(20)).backward()
            assert model.embedding.weight.grad.abs().sum() > 0
    finally:
        dist.destroy_process_group()
