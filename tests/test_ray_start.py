"""Local Ray as the config's `ray` section says: the jobs' start (jobs.ray_runtime) and the LLM
stage's (rec_core.llm.stage) pass `ray.dashboard` to ray.init; a Ray already running is joined as is."""

import pytest

from rec_core.run.config import load_config

ray = pytest.importorskip("ray")


@pytest.fixture
def recorded_init(monkeypatch):
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr("rec_core.run.stopping.stop_cleanly_on_sigterm", lambda: None)
    monkeypatch.setattr("jobs.ray_runtime.stop_cleanly_on_sigterm", lambda: None)
    return calls


@pytest.mark.parametrize("dashboard", [True, False])
def test_the_jobs_start_local_ray_with_the_configured_dashboard(recorded_init, dashboard):
    from jobs.ray_runtime import init_ray

    config = load_config(None, [f"ray.dashboard={str(dashboard).lower()}"])
    init_ray(config["ray"])
    init_ray(config["ray"])  # already running: joined, not started again
    assert [call["include_dashboard"] for call in recorded_init] == [dashboard]


def test_the_llm_stage_starts_ray_with_the_configured_dashboard_or_rays_default(recorded_init):
    from rec_core.llm.stage import _join_or_start_ray

    _join_or_start_ray({"dashboard": False})
    recorded_init.clear()
    _join_or_start_ray(None)
    assert recorded_init[0]["include_dashboard"] is None  # Ray's default: the dashboard when installed


def test_the_dashboard_is_on_by_default_and_not_a_pinned_setting():
    from rec_core.run.directory import PINNED_SECTIONS

    assert load_config(None, [])["ray"] == {"dashboard": True}
    assert "ray" not in PINNED_SECTIONS
