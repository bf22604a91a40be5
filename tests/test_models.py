import numpy as np
import pandas as pd
import pytest
import torch

from rec_core.data.splits import build_protocol, split_users
from rec_core.eval.evaluator import evaluate
from rec_core.models.multi_interest import Popularity, build_model, pad_histories
from rec_core.models.names import HISTORY_BASES
from rec_core.run.config import default_config
from rec_core.train.recipe import MultiInterestTraining, training_pairs

TRAIN = {**default_config()["train"], "embedding_dim": 16, "num_interests": 3, "max_history": 6,
         "num_negatives": 64, "batch_size": 64, "cpus_per_worker": 1, "epochs": 6, "patience": 6}


@pytest.mark.parametrize("name", HISTORY_BASES)
def test_shapes_and_padding_is_ignored(name):
    torch.manual_seed(0)
    model = build_model(name, num_items=30, train_config=TRAIN).eval()
    flat = np.array([3, 4, 5, 6, 7, 8, 9])
    history, mask = pad_histories(flat, np.array([0, 4]), np.array([3, 7]), 6, pad=30)
    assert history.tolist()[0] == [30, 30, 30, 3, 4, 5] and mask[0].tolist() == [0, 0, 0, 1, 1, 1]
    torch.manual_seed(1)
    interests = model.interests(history, mask)
    assert interests.shape == (2, 1 if name == "sasrec" else 3, 16)  # SASRec: one interest
    altered = history.clone()
    altered[0, :3] = 11  # a real item id in masked positions must change nothing
    torch.manual_seed(1)
    assert torch.allclose(model.interests(altered, mask), interests, atol=1e-6)
    torch.manual_seed(1)
    assert model.score(history, mask).shape == (2, 30)


def test_training_pairs_cover_every_position():
    from rec_core.data.splits import Sequences

    seqs = Sequences(np.array([0, 1]), np.array([0, 3, 5]), np.array([10, 11, 12, 20, 21]))
    starts, ends, user_rows = training_pairs(seqs)
    assert list(zip(starts, ends)) == [(0, 1), (0, 2), (3, 4)]
    assert user_rows.tolist() == [0, 0, 1]
    assert seqs.items[ends].tolist() == [11, 12, 21]


def clustered_interactions(n_users=300, n_groups=4, group_size=40, length=14, seed=0):
    """Each user consumes items of one or two item groups: a multi-interest structure to learn."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        groups = rng.choice(n_groups, size=rng.integers(1, 3), replace=False)
        pool = np.concatenate([np.arange(g * group_size, (g + 1) * group_size) for g in groups])
        for t, item in enumerate(rng.choice(pool, size=length, replace=False)):
            rows.append((user, int(item), t))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]), n_groups * group_size


@pytest.mark.parametrize("name", HISTORY_BASES)
def test_recipe_learns_structure_beyond_popularity(name):
    frame, n_items = clustered_interactions()
    splits, _ = split_users(frame, seed=0)
    data = build_protocol(frame, splits, n_items)
    config = {**TRAIN, "epochs": 10, "patience": 10, "learning_rate": 0.01}
    recipe = MultiInterestTraining(name, config, data, seed=0)
    recipe.setup()
    last = recipe.train()
    assert recipe.epoch_ == 10
    popularity = Popularity().fit(data.train.items, n_items)
    pop_metrics, _ = evaluate(lambda rows, h, u: popularity.score(len(rows)), data.valid, n_items, ks=[20])
    # popularity is near chance here (~20/160 of a user's pool); learning the groups must beat it clearly
    assert last["valid_recall@20"] > pop_metrics["recall@20"] + 0.1, (last, pop_metrics)


def test_recipe_resumes_from_its_state():
    frame, n_items = clustered_interactions(n_users=80)
    splits, _ = split_users(frame, seed=0)
    data = build_protocol(frame, splits, n_items)
    config = {**TRAIN, "epochs": 2}
    first = MultiInterestTraining("comirec_sa", config, data, seed=0)
    first.setup()
    first.train()
    resumed = MultiInterestTraining("comirec_sa", {**config, "epochs": 3}, data, seed=0)
    resumed.setup(first.state())
    resumed.train()
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3]
    assert resumed.history_[:2] == first.history_


def test_aligned_model_trains_with_clusters_and_needs_them():
    frame, n_items = clustered_interactions()
    splits, _ = split_users(frame, seed=0)
    data = build_protocol(frame, splits, n_items)
    # clusters = the item groups of each training user's items (as a perfect semantic grouping would)
    clusters = {}
    for row, user in enumerate(data.train.user_ids):
        items = data.train.sequence(row)
        clusters[int(user)] = [items[items // 40 == g].tolist() for g in np.unique(items // 40)]
    config = {**TRAIN, "epochs": 10, "patience": 10, "learning_rate": 0.01}
    with pytest.raises(ValueError, match="needs semantic clusters"):
        MultiInterestTraining("comirec_sa+align", config, data, seed=0)
    recipe = MultiInterestTraining("comirec_sa+align", config, data, seed=0, clusters=clusters,
                                   align={"weight": 0.1, "temperature": 0.1})
    recipe.setup()
    last = recipe.train()
    assert recipe.packed_clusters_.shape[0] == len(data.train.user_ids)
    popularity = Popularity().fit(data.train.items, n_items)
    pop_metrics, _ = evaluate(lambda rows, h, u: popularity.score(len(rows)), data.valid, n_items, ks=[20])
    assert last["valid_recall@20"] > pop_metrics["recall@20"] + 0.1


def test_model_names_combine_base_and_variants_in_order():
    from rec_core.models.names import base_model, is_aligned, is_contrastive, is_known_model, parse_model_name

    assert is_known_model("comirec_sa+align+contrast") and is_known_model("mind+contrast")
    assert not is_known_model("comirec_sa+contrast+align")  # documented order only
    assert not is_known_model("popularity+align") and not is_known_model("comirec_sa+align+align")
    assert base_model("comirec_sa+align+contrast") == "comirec_sa"
    assert is_aligned("comirec_sa+align+contrast") and is_contrastive("comirec_sa+align+contrast")
    assert not is_contrastive("comirec_sa+align")
    assert is_known_model("comirec_sa+align+contrast+shuffled") and not is_known_model("popularity+contrast+shuffled")
    assert not is_known_model("comirec_sa+shuffled") and not is_known_model("comirec_sa+shuffled+align")
    assert parse_model_name("comirec_sa+align+shuffled").shuffled


def test_full_model_trains_with_user_and_synthesized_clusters_and_needs_them():
    frame, n_items = clustered_interactions()
    splits, _ = split_users(frame, seed=0)
    data = build_protocol(frame, splits, n_items)
    clusters = {int(user): [data.train.sequence(row).tolist()] for row, user in enumerate(data.train.user_ids)}
    # crowd clusters: the item groups (as a perfect crowd grouping would), several per synthesized user
    groups = [list(range(g * 40, g * 40 + 10)) for g in range(n_items // 40)]
    synthesized = [groups[s % len(groups): s % len(groups) + 2] for s in range(len(groups) - 1)]
    config = {**TRAIN, "epochs": 4, "patience": 4, "learning_rate": 0.01}
    contrast = {"weight": 0.5, "temperature": 0.1, "users_per_batch": 4}
    with pytest.raises(ValueError, match="synthesized users"):
        MultiInterestTraining("comirec_sa+align+contrast", config, data, seed=0, clusters=clusters,
                              align={"weight": 0.1, "temperature": 0.1})
    recipe = MultiInterestTraining("comirec_sa+align+contrast", config, data, seed=0, clusters=clusters,
                                   align={"weight": 0.1, "temperature": 0.1}, synthesized_clusters=synthesized,
                                   contrast=contrast)
    recipe.setup()
    assert recipe.packed_synthesized_.shape == (len(synthesized), 2, 10)
    plain = MultiInterestTraining("comirec_sa", config, data, seed=0)
    plain.setup()
    with_contrast = recipe.run_epoch()["loss"]
    assert np.isfinite(with_contrast) and with_contrast > plain.run_epoch()["loss"]  # the extra term is there
    last = recipe.train()
    popularity = Popularity().fit(data.train.items, n_items)
    pop_metrics, _ = evaluate(lambda rows, h, u: popularity.score(len(rows)), data.valid, n_items, ks=[20])
    assert last["valid_recall@20"] > pop_metrics["recall@20"]


def aligned_recipe():
    frame, n_items = clustered_interactions(n_users=60)
    splits, _ = split_users(frame, seed=0)
    data = build_protocol(frame, splits, n_items)
    clusters = {}  # each training user's latest 8 items, grouped by item group
    for row, user in enumerate(data.train.user_ids):
        latest = data.train.sequence(row)[-8:]
        clusters[int(user)] = [latest[latest // 40 == g].tolist() for g in np.unique(latest // 40)]
    recipe = MultiInterestTraining("comirec_sa+align", {**TRAIN, "epochs": 1}, data, seed=0, clusters=clusters,
                                   align={"weight": 0.5, "temperature": 0.1})
    recipe.setup()
    return recipe, data, clusters


def test_alignment_interests_see_exactly_the_clustered_items():
    recipe, data, clusters = aligned_recipe()
    pad = data.num_items
    for row, user in enumerate(data.train.user_ids):
        seen = recipe.cluster_histories_[row][recipe.cluster_masks_[row] > 0].tolist()
        sequence = data.train.sequence(row).tolist()
        clustered = {item for cluster in clusters[int(user)] for item in cluster}
        latest = [item for item in sequence if item in clustered][-TRAIN["max_history"]:]  # 8 clustered, 6 seen
        assert seen == latest  # the latest clustered items, in time order
        # the clusters hold exactly what the interests see
        assert set(recipe.packed_clusters_[row].flatten().tolist()) - {pad} == set(seen)


def test_no_target_or_later_item_reaches_the_alignment_loss():
    """The alignment term of a batch is the same whatever the pairs' histories and targets are: it
    depends on the users' clustered items only, so a pair's target (or anything after it) can't
    supervise the interests through it."""
    recipe, data, _ = aligned_recipe()
    model = recipe.model_.eval()
    starts, ends, user_rows = recipe.pairs_
    rows = np.flatnonzero(np.isin(user_rows, [0, 1, 2]))[:12]
    extra = recipe._auxiliary(user_rows[rows], torch.Generator().manual_seed(0))
    assert "cluster_history" in extra
    negatives = torch.arange(30)

    def align_term(history, mask, target):
        with_align = model(history, mask, target, negatives, **extra)
        without = model(history, mask, target, negatives)
        return (with_align - without).item()

    history, mask = pad_histories(data.train.items, starts[rows], ends[rows], TRAIN["max_history"], data.num_items)
    target = torch.as_tensor(data.train.items[ends[rows]])
    shuffled = torch.randperm(len(rows), generator=torch.Generator().manual_seed(1))
    other_target = torch.randint(0, data.num_items, target.shape, generator=torch.Generator().manual_seed(2))
    reference = align_term(history, mask, target)
    assert reference > 0
    assert align_term(history[shuffled], mask[shuffled], other_target) == pytest.approx(reference, abs=1e-6)
    # and a batch of one user's pairs gives that user's term once, however many pairs it has
    assert len(extra["cluster_history"]) == len(np.unique(user_rows[rows]))


def test_an_auxiliary_loss_at_weight_zero_is_exactly_the_backbone():
    """One random stream per purpose: the crowd draws do not move the negatives, so a variant whose
    auxiliary weights are zero trains to the very same weights as the plain model."""
    frame, n_items = clustered_interactions(n_users=60)
    splits, _ = split_users(frame, seed=0)
    data = build_protocol(frame, splits, n_items)
    config = {**TRAIN, "epochs": 1}
    plain = MultiInterestTraining("comirec_sa", config, data, seed=3)
    plain.setup()
    plain.train()
    synthesized = [[[0, 1, 2], [50, 51]], [[3, 4], [90, 91, 92]]]
    variant = MultiInterestTraining("comirec_sa+align+contrast", config, data, seed=3,
                                    clusters={int(u): [[int(i)] for i in data.train.sequence(r)[-4:]]
                                              for r, u in enumerate(data.train.user_ids)},
                                    align={"weight": 0.0, "temperature": 0.1}, synthesized_clusters=synthesized,
                                    contrast={"weight": 0.0, "temperature": 0.1, "users_per_batch": 2})
    variant.setup()
    variant.train()
    for key, value in plain.model_.state_dict().items():
        assert torch.equal(value, variant.model_.state_dict()[key]), key


def test_shuffled_control_keeps_sizes_and_items_and_is_seeded():
    from rec_core.interests.coherence import shuffled_clusters

    clusters = {7: [[1, 2, 3], [4, 5], [6]], 9: [[10, 11], [12, 13]]}
    once, again = shuffled_clusters(clusters, 5), shuffled_clusters(clusters, 5)
    assert once == again and once != shuffled_clusters(clusters, 6)
    for key, original in clusters.items():
        assert [len(c) for c in once[key]] == [len(c) for c in original]
        assert sorted(sum(once[key], [])) == sorted(sum(original, []))
    assert shuffled_clusters({7: clusters[7]}, 5)[7] == once[7]  # per key: other users do not matter


def test_remi_hard_negatives_and_routing_regularisation():
    from rec_core.models.multi_interest import REMI

    model = REMI(num_items=30, dim=8, num_interests=3, max_history=5, hard_negative_beta=0.0)
    logits = torch.tensor([[1.0, 2.0, float("-inf"), 0.5]])
    assert torch.allclose(model.weight_negatives(logits), logits)  # beta 0: plain sampled softmax
    model.hard_negative_beta = 2.0
    weighted = model.weight_negatives(logits)
    assert torch.isinf(weighted[0, 2])  # a masked accidental hit stays masked
    # the weights sum to the number of negatives and favour the hardest (highest-scoring) ones
    weights = torch.exp(weighted - logits)[0, [0, 1, 3]]
    assert weights.sum().item() == pytest.approx(3.0) and weights.argmax().item() == 1
    uniform = torch.full((2, 3, 5), 0.2)
    assert model.routing_loss(uniform).item() == pytest.approx(0.0)
    collapsed = torch.zeros(2, 3, 5)
    collapsed[:, :, 0] = 1.0
    assert model.routing_loss(collapsed).item() > 0


def test_sasrec_is_one_causal_interest_blind_to_padding():
    from rec_core.models.multi_interest import SASRec

    torch.manual_seed(0)
    model = SASRec(num_items=30, dim=8, max_history=6, blocks=2, heads=2, dropout=0.0).eval()
    history = torch.tensor([[30, 30, 3, 4, 5, 6], [30, 30, 30, 30, 30, 7]])
    mask = (history != 30).float()
    interests = model.interests(history, mask)
    assert interests.shape == (2, 1, 8) and torch.isfinite(interests).all()
    longer = torch.tensor([[1, 2, 3, 4, 5, 6]])
    assert not torch.allclose(model.interests(longer, torch.ones(1, 6)), interests[:1])  # sees the items
    model.item_embedding.weight.data[30] = 5.0  # whatever the padding row holds, it is never attended
    assert torch.allclose(model.interests(history, mask), interests, atol=1e-6)


def test_training_shards_are_the_training_users_and_one_shard_trains_as_the_whole_data(tmp_path):
    """Ray Train workers read their training users from Ray Data (rec_core.train.ray_train): the
    blocks of the shards, read back in any order, are the protocol's training sequences cut into
    contiguous ranges of users; the validation set a worker reads with a row filter is the
    protocol's; and one worker's shard trains exactly as the whole data did."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rec_core.train.ray_train import load_shard_protocol, shard_blocks, shard_sequences

    frame, n_items = clustered_interactions(n_users=120)
    splits, _ = split_users(frame, seed=0)
    for name, table in (("interactions", frame), ("user_splits", splits),
                        ("items", pd.DataFrame({"item_id": np.arange(n_items)}))):
        (tmp_path / name).mkdir()
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp_path / name / "part-0.parquet")
    data = build_protocol(frame, splits, n_items)
    whole = shard_sequences(shard_blocks(tmp_path, 1)[0][::-1])
    assert np.array_equal(whole.user_ids, data.train.user_ids) and np.array_equal(whole.offsets, data.train.offsets)
    assert np.array_equal(whole.items, data.train.items)
    shards = [shard_sequences(blocks) for blocks in shard_blocks(tmp_path, 3)]
    assert np.array_equal(np.concatenate([s.user_ids for s in shards]), data.train.user_ids)
    assert np.array_equal(np.concatenate([s.items for s in shards]), data.train.items)
    pairs = [int(np.maximum(np.diff(s.offsets) - 1, 0).sum()) for s in shards]
    assert max(pairs) - min(pairs) <= 13  # a user's 13 pairs at most between them
    shard_data = load_shard_protocol(tmp_path, 0.8, whole)
    for part in ("histories", "targets"):
        ours, theirs = getattr(shard_data.valid, part), getattr(data.valid, part)
        assert np.array_equal(ours.offsets, theirs.offsets) and np.array_equal(ours.items, theirs.items)
    config = {**TRAIN, "epochs": 2, "max_samples_per_epoch": 500}
    runs = []
    for recipe in (MultiInterestTraining("comirec_sa", config, data, seed=0),
                   MultiInterestTraining("comirec_sa", config, shard_data, seed=0, data_is_shard=True)):
        recipe.setup()
        recipe.train()
        runs.append([(h["loss"], h["valid_recall@50"]) for h in recipe.history_])
    assert runs[0] == runs[1]
