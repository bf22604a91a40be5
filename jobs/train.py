"""Stage 2, train: fit every configured neural model with Ray Train (TorchTrainer).

Each model is its own sub-stage `train:<model>`: a finished model is skipped on rerun, an
interrupted one resumes from its last checkpoint. The best weights (validation Recall@50) are
written to <run>/models/<model>/ as model.safetensors + model.json (rec_core.train.saved_model). Popularity needs no training; a distilled student
(`+distill`) is fine-tuned by the distill stage after its teacher and student (jobs.distill).

On an incremental night (rec_core.run.incremental) a multi-interest model whose architecture
(ARCHITECTURE_KEYS) is the previous run's starts from its weights and trains at most
`incremental.epochs` epochs; the manifest entry of `train:<model>` says which start it had."""

from __future__ import annotations

import logging

from jobs.ray_runtime import init_ray
from rec_core.models.names import is_distilled, is_neural, parse_model_name
from rec_core.run.cli import main_guard
from rec_core.run.config import ConfigError
from rec_core.run.directory import Run
from rec_core.run.incremental import item_rows, previous_root
from rec_core.storage.location import Location
from rec_core.train.ray_train import fit_with_ray_train
from rec_core.train.saved_model import CONFIG_FILE, WEIGHTS_FILE, load_model_config, save_model
from rec_core.train.scoring import model_config

log = logging.getLogger(__name__)

# the train settings that shape a multi-interest model's weights: a warm start needs them unchanged
ARCHITECTURE_KEYS = ("embedding_dim", "num_interests", "max_history", "routing_iterations", "transformer_blocks",
                     "attention_heads")


def check_workers_fit(train_config: dict) -> None:
    """Fail at once, instead of Ray Train waiting for resources that never come, when one worker
    (train.cpus_per_worker CPUs, a GPU with train.use_gpu) fits on no alive node, or all
    train.num_workers of them exceed the cluster. (An autoscaling cluster whose nodes are not up yet
    fails this too: start its minimum workers first, as cluster/ray-cluster.yaml does.)"""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    demand = {"CPU": float(train_config["cpus_per_worker"]), **({"GPU": 1.0} if train_config["use_gpu"] else {})}
    for resource, each in demand.items():
        largest = max((node.get(resource, 0.0) for node in nodes), default=0.0)
        total = sum(node.get(resource, 0.0) for node in nodes)
        setting = "train.cpus_per_worker" if resource == "CPU" else "train.use_gpu"
        if largest < each:
            raise ConfigError(f"{setting}: a training worker needs {each:g} {resource} on one node; the largest node "
                              f"of the cluster has {largest:g}")
        if total < each * train_config["num_workers"]:
            raise ConfigError(f"train.num_workers={train_config['num_workers']} workers need "
                              f"{each * train_config['num_workers']:g} {resource} in all; the cluster has {total:g} "
                              f"(lower train.num_workers or {setting})")


def train(run: Run) -> None:
    pending = [name for name in run.config["models"]
               if is_neural(name) and not is_distilled(name) and not run.stage_done(f"train:{name}")]
    if not pending:
        return
    init_ray(run.config["ray"])
    num_items = len(run.read_table("items"))
    for name in pending:
        train_model(run, name, num_items)


def warm_start(previous: Location | None, run: Run, name: str) -> tuple[dict | None, str]:
    """({"folder": the previous run's model, "item_rows": ...} or None, why) for model `name`."""
    if previous is None:
        return None, "full run"
    spec = parse_model_name(name)
    if spec.graph or spec.session:
        return None, "trains from scratch (warm starts are for the multi-interest models)"
    folder = previous / "models" / name
    if not (folder / "model.json").is_file():
        return None, f"not in the previous run {previous.name}"
    before, now = load_model_config(folder)["train_config"], run.config["train"]
    changed = [key for key in ARCHITECTURE_KEYS if before.get(key) != now.get(key)]
    if changed:
        return None, f"other {', '.join(changed)} than in the previous run: trains from scratch"
    return {"folder": str(folder), "item_rows": item_rows(previous, run.read_table("items"))}, \
        f"warm start from {previous.name}"


def train_model(run: Run, name: str, num_items: int) -> dict:
    """The sub-stage `train:<name>`: Ray Train, the best weights saved; its manifest record."""
    with run.stage(f"train:{name}") as info:
        check_workers_fit(run.config["train"])
        warm, info["start"] = warm_start(previous_root(run), run, name)
        config = run.config
        if warm is not None:
            config = {**config, "train": {**config["train"], "epochs": config["incremental"]["epochs"]}}
            info["items_known"] = int((warm["item_rows"] >= 0).sum())
            info["items_new"] = int((warm["item_rows"] < 0).sum())
        state = fit_with_ray_train(name, config, run.root, warm_start=warm)
        save_model(run.root / "models" / name, name, num_items, model_config(name, config), state["best_model"],
                   state["history"])
        for file in (WEIGHTS_FILE, CONFIG_FILE):
            run.register_output(f"models/{name}/{file}")
        info["epochs"] = state["epoch"]
        info["resumed_after_epochs"] = state.get("resumed_after", [])  # restarts from a checkpoint
        info["best_valid_recall@50"] = state["best_metric"]
        info["train_samples_per_s"] = state["history"][-1]["samples_per_s"] if state["history"] else None
        scores = [epoch["valid_recall@50"] for epoch in state["history"]]
        # the first epoch reaching the best score (0 for a distilled student whose fine-tuning never
        # beat the student it started from: then it is that student unchanged)
        info["best_epoch"] = next((e + 1 for e, s in enumerate(scores) if s >= state["best_metric"]), 0)
    return info


def main(argv=None) -> None:
    main_guard(lambda config: train(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
