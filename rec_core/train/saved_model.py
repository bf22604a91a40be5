"""A trained model on disk: `<run>/models/<model>/model.safetensors` (the best weights by
validation) and `model.json` (what rebuilds the model: name, catalogue size, the training config,
the per-epoch history, the format version).

Safetensors holds tensors only, so loading a model file runs no code, whoever wrote it (a run
directory often sits on shared storage); the JSON is read as data. Ray Train's checkpoints (the
training state: weights, optimiser, epoch counters) are torch files loaded with
`weights_only=True` for the same reason (`load_training_state`).
"""

from __future__ import annotations

import json
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from rec_core.storage.location import Location

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
FORMAT_VERSION = 1


def save_model(folder: "str | os.PathLike | Location", name: str, num_items: int, train_config: dict,
               weights: dict, history: list[dict]) -> None:
    """Write the weights and the config, each atomically (Location.write_bytes), so a reader never
    sees half a file."""
    folder = Location.of(folder)
    folder.mkdir()
    # safetensors refuses tensors that share memory; each is saved as its own contiguous copy
    tensors = {key: value.detach().contiguous().clone() for key, value in weights.items()}
    (folder / WEIGHTS_FILE).write_bytes(save(tensors, metadata={"model": name, "format_version": str(FORMAT_VERSION)}))
    config = {"format_version": FORMAT_VERSION, "name": name, "num_items": int(num_items),
              "train_config": train_config, "history": history}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1, default=float))


def load_model_config(folder: "str | os.PathLike | Location") -> dict:
    """model.json of a saved model (name, num_items, train_config, history)."""
    path = Location.of(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the model was not trained in this run (or the run predates "
                                "the safetensors format): rerun its train stage under a new run id")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): retrain the model under a new run id") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {config.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    return config


def load_model(folder: "str | os.PathLike | Location") -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, weights) of a saved model; the weights are plain tensors (safetensors: no code runs)."""
    config = load_model_config(folder)
    path = Location.of(folder) / WEIGHTS_FILE
    try:
        weights = load(path.read_bytes())
    except (OSError, SafetensorError) as error:  # missing, truncated or not safetensors
        raise ValueError(f"{path} cannot be read ({error}): retrain the model under a new run id") from None
    return config, weights


def load_training_state(path: str) -> dict:
    """A Ray Train checkpoint's training state, tensors and plain containers only, on the CPU (a GPU
    worker's checkpoint is read by the driver; a restored worker moves it to its device)."""
    return torch.load(path, weights_only=True, map_location="cpu")
