"""Stage: publish the finished run, if it passes the quality gate (rec_core.run.publish).

The last stage of the refresh when `publish.enabled` (the default): the run's validation metric
(`publish.metric` at `publish.k`) is compared model by model with the run that
`<output_dir>/latest` points at; a drop beyond `publish.tolerance` ends the job with exit code 3
and leaves `latest` where it was. Otherwise the run gets `_SUCCESS`, `latest` points at it, and
`publish.keep_runs` prunes old unpublished runs. Run alone to publish a finished run again after
changing the tolerance:

    python -m jobs.publish run_id=20261203-020000 publish.tolerance=0.1
"""

from __future__ import annotations

from rec_core.run.cli import main_guard
from rec_core.run.config import ConfigError
from rec_core.run.directory import Run
from rec_core.run.publish import publish as publish_run


def publish(run: Run) -> None:
    unfinished = [stage for stage in ("evaluate", "export") if not run.stage_current(stage)]
    if unfinished:
        raise ConfigError(f"run {run.run_id}: {' and '.join(unfinished)} not finished; only a finished run is "
                          "published (run jobs.refresh with this run_id)")
    with run.stage("publish") as info:
        record = publish_run(run)
        info.update(against=record["against"], checks=len(record["checks"]), deleted_runs=record["deleted_runs"])


def main(argv=None) -> None:
    main_guard(lambda config: publish(Run(config)), argv, __doc__)


if __name__ == "__main__":
    main()
