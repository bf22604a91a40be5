"""The refresh job: ingest -> [semantic] -> [synthesize -> crowd_semantic] -> [describe] -> train ->
[distill] -> evaluate -> export -> report -> [publish] into <output_dir>/<run_id>/.

The semantic stage (user-individual interests) runs when a configured model has "+align"; the
crowd stages (cliques, max-cover synthesized users, their interests) when one has "+contrast"; the
graph-hop descriptions (GaCLLM) when one has "+desc"; the distillation of session students
(ALKDRec, jobs.distill) when one has "+distill"; publish (the quality gate against the published
run, then <output_dir>/latest; exit code 3 when refused) when `publish.enabled`. Session data sets (session_splits) are trained and
evaluated on the session protocol (configs/sessions-hetrec-ml.yaml; `python -m jobs.distill`).

    python -m jobs.refresh                                  # ML-100K, the default models, local Ray
    python -m jobs.refresh --config configs/amazon-beauty.yaml run_id=beauty-1
    ray job submit --working-dir . -- python -m jobs.refresh output_dir=/shared/runs   # a night: a new run

Rerunning with the same run_id skips stages already done (and resumes an interrupted training),
under the same settings, code and input data only (rec_core.run.directory). A night scheduled with
`run_id=nightly-{date} previous_run=latest` starts from the published run and recomputes only what
changed (rec_core.run.incremental; cluster/raycronjob.yaml):

    python -m jobs.refresh --config configs/amazon-beauty.yaml run_id=nightly-{date} previous_run=latest
"""

from __future__ import annotations

import importlib
import logging
import time

from rec_core.models.names import is_aligned, is_contrastive, is_described, is_distilled
from rec_core.run.cli import main_guard
from rec_core.run.directory import Run
from rec_core.run.incremental import INCREMENTAL, plan_night

log = logging.getLogger(__name__)


STAGES = {  # stage -> "module:function", imported when the stage runs (so --help and a config error are quick)
    "ingest": "jobs.ingest:ingest", "semantic": "jobs.semantic:semantic", "synthesize": "jobs.synthesize:synthesize",
    "crowd_semantic": "jobs.crowd_semantic:crowd_semantic", "describe": "jobs.describe:describe",
    "train": "jobs.train:train", "distill": "jobs.distill:distill", "evaluate": "jobs.evaluate:evaluate_run",
    "export": "jobs.export:export", "report": "jobs.report:report", "publish": "jobs.publish:publish"}


def stage_function(stage: str):
    module, function = STAGES[stage].split(":")
    return getattr(importlib.import_module(module), function)


def stages_for(models: list[str]) -> list[str]:
    """The DAG, in order, for a set of models (names parsed by rec_core.models.names)."""
    stages = ["ingest", "train", "evaluate", "export", "report"]
    if any(is_contrastive(model) for model in models):  # these train on the crowd's clusters
        stages[1:1] = ["synthesize", "crowd_semantic"]
    if any(is_described(model) for model in models):  # lightgcn+desc trains on its embeddings
        stages.insert(stages.index("train"), "describe")
    if any(is_distilled(model) for model in models):  # after its teacher and student are trained
        stages.insert(stages.index("train") + 1, "distill")
    if any(is_aligned(model) for model in models):
        stages.insert(1, "semantic")  # the aligned models train on its clusters
    return stages


def release_memory() -> None:
    """Between stages: what a finished stage freed goes back to the system (Python's garbage, Arrow's
    memory pool, the C heap's free pages), so the long-lived driver's RSS in a stage is that stage's
    own, not the high-water mark of every stage before it."""
    import ctypes
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


TRAINING_STAGES = ("train", "distill")  # distill fine-tunes students: training too, validated, no test split


def stages_until(stages: list[str], stop_after: str) -> list[str]:
    """The stages up to `stop_after`; "train" reaches the last training stage (distill, where a model
    is distilled), so a sweep of distill.* settings reads the distilled students' validation."""
    last = max(stages.index(name) for name in TRAINING_STAGES if name in stages) if stop_after == "train" \
        else stages.index(stop_after)
    return stages[: last + 1]


def refresh(config: dict, stop_after: str | None = None) -> Run:
    """Run the DAG; `stop_after="train"` ends after training (a settings sweep, which must choose
    on validation and never read the test split)."""
    began = time.perf_counter()
    run = Run(config)
    log.info("run %s -> %s", run.run_id, run.root)
    if config["previous_run"] is not None:
        plan = plan_night(run)
        print(f"{plan['mode']} night ({plan['reason']})"
              + (f", from run {plan['previous_run']}" if plan["mode"] == INCREMENTAL else ""), flush=True)
    stages = stages_for(config["models"])
    if config["publish"]["enabled"] and stop_after is None:
        stages.append("publish")
    if stop_after is not None:
        stages = stages_until(stages, stop_after)
    for stage in stages:
        if stage not in TRAINING_STAGES and run.stage_current(stage):
            log.info("stage %s already done in this run: skipped", stage)
            if stage == "evaluate":
                from jobs.evaluate import metrics_table

                print(metrics_table(run.read_table("metrics")), flush=True)
            continue
        stage_function(stage)(run)
        release_memory()
    run.manifest["total_seconds"] = round(time.perf_counter() - began, 1)
    run.save_manifest()
    print(f"\nrun {run.run_id} finished in {run.manifest['total_seconds']} s; outputs in {run.root}", flush=True)
    return run


def main(argv=None) -> None:
    main_guard(refresh, argv, __doc__)


if __name__ == "__main__":
    main()
