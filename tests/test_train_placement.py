"""Where training runs: a worker that fits on no node is refused at once (not waited for), and with
train.use_gpu the model and every batch are on the worker's device (checked here with torch's
"meta" device, on which any tensor left on the CPU makes an operation fail)."""

import numpy as np
import pytest
import torch

from rec_core.run.config import ConfigError, load_config


def test_a_worker_that_fits_on_no_node_is_refused_at_once(monkeypatch):
    import ray

    from jobs.train import check_workers_fit

    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    train = load_config(None, [])["train"]
    check_workers_fit({**train, "num_workers": 3, "cpus_per_worker": 1})
    with pytest.raises(ConfigError, match=r"train\.cpus_per_worker: a training worker needs 16 CPU on one node; "
                                          r"the largest node of the cluster has 2"):
        check_workers_fit({**train, "num_workers": 1, "cpus_per_worker": 16})
    with pytest.raises(ConfigError, match=r"train\.num_workers=2 workers need 4 CPU in all; the cluster has 3"):
        check_workers_fit({**train, "num_workers": 2, "cpus_per_worker": 2})
    with pytest.raises(ConfigError, match=r"train\.use_gpu: a training worker needs 1 GPU on one node; .* has 0"):
        check_workers_fit({**train, "num_workers": 1, "cpus_per_worker": 1, "use_gpu": True})


def all_tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from all_tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from all_tensors(item)


@pytest.mark.parametrize("name", ["comirec_sa", "mind", "sasrec", "comirec_sa+contrast"])
def test_with_a_device_the_model_and_every_batch_are_placed_on_it(name):
    from test_models import TRAIN, clustered_interactions

    from rec_core.data.splits import build_protocol, split_users
    from rec_core.train.recipe import MultiInterestTraining

    frame, n_items = clustered_interactions(n_users=60)
    data = build_protocol(frame, split_users(frame, seed=0)[0], n_items)
    groups = [list(range(g * 40, g * 40 + 10)) for g in range(n_items // 40)]
    extra = {"synthesized_clusters": [groups[:2], groups[1:3]],
             "contrast": {"weight": 0.5, "temperature": 0.1, "users_per_batch": 2}} if "+contrast" in name else {}
    recipe = MultiInterestTraining(name, TRAIN, data, seed=0, **extra)
    meta = torch.device("meta")
    recipe.setup(device=meta)
    assert {t.device for t in [*recipe.model_.parameters(), *recipe.model_.buffers()]} == {meta}
    generator, draws = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    batch = recipe.placed_batch(np.arange(8), generator, draws)
    assert {t.device for t in all_tensors(batch)} == {meta} and len(list(all_tensors(batch))) >= 4
    inputs, negatives, auxiliary = batch
    if not extra:  # (the contrastive term reads a value, which meta tensors do not hold)
        loss = recipe.trainable_(*inputs, negatives, **auxiliary)  # a tensor left on the CPU would fail here
        assert loss.device == meta and loss.shape == ()
    # the same draws on the CPU: placement changes where a batch lives, not what it holds
    cpu = MultiInterestTraining(name, TRAIN, data, seed=0, **extra)
    cpu.setup()
    again = cpu.placed_batch(np.arange(8), torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    assert [tuple(t.shape) for t in all_tensors(again)] == [tuple(t.shape) for t in all_tensors(batch)]


def test_a_graph_model_moves_its_graph_and_descriptions_with_it():
    from test_graph import group_descriptions, protocol_and_graph

    from rec_core.train.graph_recipe import GraphTraining
    from test_graph import TRAIN as GRAPH_TRAIN

    _, _, _, data, graph = protocol_and_graph()
    recipe = GraphTraining("lightgcn+desc", GRAPH_TRAIN, data, 0, graph, descriptions=group_descriptions(graph),
                           desc={"weight": 0.1, "temperature": 0.2, "nodes_per_batch": 64, "fusion": "sum"})
    meta = torch.device("meta")
    recipe.setup(device=meta)
    assert recipe.model_.adjacency.device == meta and {t.device for t in recipe.model_.descriptions} == {meta}
    batch = recipe.placed_batch(np.arange(16), torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    assert {t.device for t in all_tensors(batch)} == {meta}  # (sparse products do not run on meta)
    assert "adjacency" not in recipe.model_.state_dict()  # rebuilt from the run's tables, never saved
