"""Joining Ray, for the stages that use it (a module of its own: importing jobs.train for this
would load torch, ~230 MiB of the driver, into stages that train nothing)."""

from __future__ import annotations

from rec_core.run.stopping import stop_cleanly_on_sigterm


def init_ray(settings: dict) -> None:
    """Join the cluster of `ray job submit` ($RAY_ADDRESS) or start local Ray with the config's `ray`
    section (`settings`: its dashboard or not; ignored when joining, the head has its own)."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=True, configure_logging=False, include_dashboard=settings["dashboard"])
        stop_cleanly_on_sigterm()
