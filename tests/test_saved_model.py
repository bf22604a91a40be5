import json
import os
import pickle

import pytest
import torch

from rec_core.models.multi_interest import build_model
from rec_core.train.saved_model import (CONFIG_FILE, WEIGHTS_FILE, load_model, load_model_config, load_training_state,
                                        save_model)

TRAIN = {"embedding_dim": 8, "num_interests": 2, "max_history": 5, "routing_iterations": 3}


def test_a_saved_model_rebuilds_with_the_same_weights_and_config(tmp_path):
    model = build_model("comirec_sa", 30, TRAIN)
    history = [{"epoch": 1, "valid_recall@50": 0.25}]
    save_model(tmp_path, "comirec_sa", 30, TRAIN, model.state_dict(), history)
    assert sorted(os.listdir(tmp_path)) == [CONFIG_FILE, WEIGHTS_FILE]  # no partial files left
    config, weights = load_model(tmp_path)
    assert config["name"] == "comirec_sa" and config["num_items"] == 30 and config["history"] == history
    rebuilt = build_model(config["name"], config["num_items"], config["train_config"])
    rebuilt.load_state_dict(weights)
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_tensors_that_share_memory_are_saved(tmp_path):
    shared = torch.arange(6.0)
    save_model(tmp_path, "m", 6, {}, {"a": shared, "b": shared[:3], "c": shared.view(2, 3).T}, [])
    _, weights = load_model(tmp_path)
    assert torch.equal(weights["b"], torch.arange(3.0)) and weights["c"].shape == (3, 2)


def test_unreadable_model_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        load_model(tmp_path)
    save_model(tmp_path, "m", 1, {}, {"a": torch.zeros(1)}, [])
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=WEIGHTS_FILE):
        load_model(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{truncated")
    with pytest.raises(ValueError, match=CONFIG_FILE):
        load_model_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load_model_config(tmp_path)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran-code",))


def test_a_crafted_checkpoint_does_not_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "state.pt"
    torch.save({"model": {}, "payload": RunsCode()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_training_state(str(path))
    assert not (tmp_path / "ran-code").exists()
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3, "history": [{"loss": 1.0}]}, path)
    assert load_training_state(str(path))["epoch"] == 3
