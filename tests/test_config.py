import pytest

from rec_core.config import DEFAULTS, ConfigError, load_config


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  dataset: amazon-beauty\ntrain:\n  epochs: 7\n")
    config = load_config(path, ["train.epochs=3", "models=[mind]", "run_id=abc"])
    assert config["data"]["dataset"] == "amazon-beauty"
    assert config["train"]["epochs"] == 3
    assert config["train"]["batch_size"] == DEFAULTS["train"]["batch_size"]
    assert config["models"] == ["mind"] and config["run_id"] == "abc"


@pytest.mark.parametrize("override,message", [
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("models=[sasrec]", "unknown model"),
    ("split.ratios=[0.5,0.1,0.1]", "summing to 1"),
    ("train", "key=value"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


def test_rerun_with_other_data_settings_is_refused(tmp_path):
    from rec_core.runs import Run

    Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1"]))
    Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1", "models=[popularity]"]))  # allowed
    with pytest.raises(ConfigError, match="different data settings"):
        Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1", "data.k_core=5"]))
