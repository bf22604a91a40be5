import numpy as np
import pandas as pd
import pytest

from rec_core.eval.paired import bootstrap_interval, paired_difference


def frame(values, users=None, metric="recall", k=50, run=0):
    users = np.arange(len(values)) if users is None else users
    return pd.DataFrame({"user_id": users, "metric": metric, "k": k, "value": values, "run": run})


def test_paired_interval_finds_a_small_shift_under_large_user_variance():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0, 1, 300)  # users differ a lot ...
    b = difficulty
    a = difficulty + 0.02 + rng.normal(0, 0.01, 300)  # ... and a is consistently a bit better
    diff = paired_difference(frame(a), frame(b), "recall", 50)
    assert diff.users == 300 and diff.runs == 1
    assert 0 < diff.low < 0.02 < diff.high
    assert diff.difference == pytest.approx(np.mean(a - b))
    assert diff.relative == pytest.approx(diff.difference / np.mean(b))
    # the unpaired spread of the means is far larger than the shift: pairing is what shows it
    assert np.std(difficulty) / np.sqrt(300) > diff.high - diff.low


def test_no_difference_gives_an_interval_around_zero():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 500)
    diff = paired_difference(frame(base + rng.normal(0, 0.05, 500)), frame(base + rng.normal(0, 0.05, 500)),
                             "recall", 50)
    assert diff.low < 0 < diff.high


def test_runs_are_averaged_per_user_and_only_shared_users_count():
    a = pd.concat([frame([0.5, 0.7, 0.9], run=0), frame([0.7, 0.9, 0.9], run=1)])
    b = frame([0.4, 0.6], users=[1, 2])
    diff = paired_difference(a, b, "recall", 50)
    assert diff.users == 2 and diff.runs == 2
    assert diff.mean_a == pytest.approx((0.8 + 0.9) / 2) and diff.mean_b == pytest.approx(0.5)
    assert diff.difference == pytest.approx(((0.8 - 0.4) + (0.9 - 0.6)) / 2)


def test_other_metrics_and_cutoffs_are_not_mixed_in():
    a = pd.concat([frame([0.5, 0.5]), frame([9.0, 9.0], metric="ndcg"), frame([9.0, 9.0], k=20)])
    b = frame([0.25, 0.25])
    assert paired_difference(a, b, "recall", 50).difference == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no user has hit_rate@50"):
        paired_difference(a, b, "hit_rate", 50)


def test_bootstrap_is_seeded_and_needs_two_users():
    values = np.random.default_rng(2).normal(size=50)
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    with pytest.raises(ValueError, match="at least 2 users"):
        bootstrap_interval(np.array([0.1]))


def user_metrics_table(folder, model, values, k):
    rows = pd.DataFrame({"model": model, "split": "test", "user_id": np.arange(len(values)), "metric": "recall",
                         "k": k, "value": values})
    rows = pd.concat([rows, rows.assign(metric="ndcg")])
    (folder / "user_metrics").mkdir(parents=True)
    rows.to_parquet(folder / "user_metrics" / "part-0.parquet")


def test_paired_report_pairs_models_from_different_runs_at_the_given_cutoffs(tmp_path, capsys):
    import json

    from jobs.benchmarks.models import paired_report
    user_metrics_table(tmp_path / "backbone", "sasrec", [0.2, 0.4, 0.6, 0.8], k=10)
    user_metrics_table(tmp_path / "variant", "sasrec+contrast", [0.3, 0.5, 0.7, 0.9], k=10)
    paired_report([str(tmp_path / "backbone"), str(tmp_path / "variant")], "sasrec", cutoffs=(10,))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(e["paired"]["model"], e["paired"]["metric"]) for e in lines] == [
        ("sasrec+contrast", "recall@10"), ("sasrec+contrast", "ndcg@10")]
    assert lines[0]["paired"]["difference"] == pytest.approx(0.1) and lines[0]["paired"]["users"] == 4


def test_paired_report_defaults_to_the_scored_cutoffs_and_refuses_others(tmp_path, capsys):
    """Session runs score 5,10,20: the report pairs at those instead of failing on a missing @50."""
    import json

    from jobs.benchmarks.models import paired_report
    from rec_core.run.config import ConfigError
    user_metrics_table(tmp_path / "student", "fpmc+student", [0.1, 0.2, 0.3], k=20)
    user_metrics_table(tmp_path / "distilled", "fpmc+student+distill", [0.2, 0.2, 0.5], k=20)
    runs = [str(tmp_path / "student"), str(tmp_path / "distilled")]
    paired_report(runs, "fpmc+student")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [e["paired"]["metric"] for e in lines] == ["recall@20", "ndcg@20"]
    assert lines[0]["paired"]["difference"] == pytest.approx(0.1)
    with pytest.raises(ConfigError, match=r"cut-offs \[50\] are not scored by these runs \(it scores \[20\]"):
        paired_report(runs, "fpmc+student", cutoffs=(20, 50))


def test_a_comparison_checks_its_cutoffs_against_eval_ks_before_training(monkeypatch):
    from jobs.benchmarks import models
    from rec_core.run.config import ConfigError
    assert models.scored_cutoffs([5, 10, 20], None, "run r") == (5, 10, 20)
    assert models.scored_cutoffs([10, 20, 50], (50, 20), "run r") == (50, 20)

    def no_training(config):
        raise AssertionError("trained before the cut-offs were checked")

    monkeypatch.setattr(models, "refresh", no_training)
    with pytest.raises(ConfigError, match=r"cut-offs \[50\] are not scored by run r-s0 \(it scores \[5, 10, 20\]"):
        models.compare_models("alignment", ["fpmc"], "sessions-hetrec-ml", None, ["eval.ks=[5,10,20]"], 1,
                              "encoder", name="r", cutoffs=(20, 50))


def test_labelled_runs_pair_one_model_trained_under_two_settings(tmp_path, capsys):
    import json

    from jobs.benchmarks.models import paired_report
    user_metrics_table(tmp_path / "encoder", "lightgcn+desc", [0.2, 0.4, 0.6], k=50)
    user_metrics_table(tmp_path / "llm", "lightgcn+desc", [0.1, 0.4, 0.4], k=50)
    paired_report([f"encoder={tmp_path / 'encoder'}", f"llm={tmp_path / 'llm'}"], "lightgcn+desc[encoder]")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(e["paired"]["model"], e["paired"]["against"], e["paired"]["metric"]) for e in lines] == [
        ("lightgcn+desc[llm]", "lightgcn+desc[encoder]", "recall@50"),
        ("lightgcn+desc[llm]", "lightgcn+desc[encoder]", "ndcg@50")]
    assert lines[0]["paired"]["difference"] == pytest.approx(-0.1) and lines[0]["paired"]["runs"] == 1
    # a path holding "=" without a label is a path
    user_metrics_table(tmp_path / "run_id=plain", "lightgcn+desc", [0.3, 0.4, 0.5], k=50)
    paired_report([str(tmp_path / "run_id=plain"), f"llm={tmp_path / 'llm'}"], "lightgcn+desc")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines[0]["paired"]["model"] == "lightgcn+desc[llm]"
    assert lines[0]["paired"]["difference"] == pytest.approx(-0.1)
