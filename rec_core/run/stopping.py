"""Stopping a job cleanly on SIGTERM (standard library only: the LLM stage and the training, which
start Ray, import it without loading the config machinery)."""

from __future__ import annotations

import signal
import sys
import threading

_stopped_by: list[int] = []  # the signal that stopped this job, if one did


def _stop(signum, _frame) -> None:
    _stopped_by.append(signum)
    print(f"error: stopped by signal {signum}; rerun the same run_id to resume", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM (a preempted pod, `kill`, `ray job stop`): unwind, so the running stage is recorded
    as failed and the run folder's lock is released; exit code 143; the next run of the same run_id
    resumes. `ray.init` installs its own handler (exit 1 after a C++ stack dump): the places that
    start Ray call this again after it. (Ray may turn the SystemExit raised inside a blocking
    `ray.get` into SystemExit(1); main_guard restores the exit code.)"""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)


def stopped_by() -> int | None:
    """The signal that stopped this job, or None."""
    return _stopped_by[0] if _stopped_by else None


def shutdown_ray() -> None:
    """Stop the Ray instance a stage of this job started or joined, so its actors (the vLLM engine,
    Ray Train's controller) end in order before the job's last line rather than being killed at
    interpreter exit. Ray is looked up, not imported: a job that never started it has nothing to stop."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
