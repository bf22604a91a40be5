import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rec_core.run.config import ConfigError, default_config, describe_keys, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  dataset: amazon-beauty\ntrain:\n  epochs: 7\n  learning_rate: 1e-3\n")
    config = load_config(path, ["train.epochs=3", "models=[mind]", "run_id=abc"])
    assert config["data"]["dataset"] == "amazon-beauty"
    assert config["train"]["epochs"] == 3
    assert config["train"]["learning_rate"] == 0.001  # YAML 1.1 reads 1e-3 as a string
    assert config["train"]["batch_size"] == default_config()["train"]["batch_size"]
    assert config["models"] == ["mind"] and config["run_id"] == "abc"


@pytest.mark.parametrize("override,key,value", [
    ("train.learning_rate=1e-3", ("train", "learning_rate"), 0.001),
    ("train.learning_rate=5E-4", ("train", "learning_rate"), 0.0005),
    ("train.weight_decay=0", ("train", "weight_decay"), 0.0),
    ("eval.ks=5", ("eval", "ks"), [5]),
    ("eval.ks=[5,10]", ("eval", "ks"), [5, 10]),
    ("eval.ks=5,10", ("eval", "ks"), [5, 10]),
    ("models=comirec_sa", ("models",), ["comirec_sa"]),
    ("models=[mind, comirec_sa+align]", ("models",), ["mind", "comirec_sa+align"]),
    ("run_id=010", ("run_id",), "010"),  # text stays text: not the octal 8
    ("run_id=12:30", ("run_id",), "12:30"),  # not YAML 1.1's sexagesimal 750
    ("llm.model=null", ("llm", "model"), None),
    ("train.use_gpu=true", ("train", "use_gpu"), True),
])
def test_values_parse_to_their_types(override, key, value):
    config = load_config(None, [override])
    for part in key:
        config = config[part]
    assert config == value and type(config) is type(value)


@pytest.mark.parametrize("override,message", [
    ("train.epoch=3", "unknown config key 'train.epoch' (known in train: num_workers,"),
    ("nosuch=3", "unknown config key 'nosuch' (known at the top: run_id,"),
    ("models=[narm]", "config key 'models': got ['narm']; unknown model 'narm'"),
    ("models=popularity+align", "only mind, comirec_dr, comirec_sa, remi, sasrec take"),
    ("models=comirec_sa+contrast+align", "in that order"),
    ("split.ratios=[0.5,0.1,0.1]", "config key 'split.ratios': got [0.5, 0.1, 0.1]; must be three positive shares"),
    ("train.epochs=abc", "config key 'train.epochs': got 'abc'; input should be a valid integer"),
    ("train.epochs=2.5", "config key 'train.epochs': got 2.5; input should be a valid integer"),
    ("train.epochs=0", "config key 'train.epochs': got 0; input should be greater than or equal to 1"),
    ("train.learning_rate=-1", "config key 'train.learning_rate': got -1; input should be greater than 0"),
    ("semantic.backend=gpt", "config key 'semantic.backend': got 'gpt'; input should be 'encoder' or 'llm'"),
    ("data.dataset=netflix", "config key 'data.dataset': got 'netflix'; must be one of movielens-100k"),
    ("eval.ks=[0]", "config key 'eval.ks.0': got 0; input should be greater than or equal to 1"),
    ("train=5", "config key 'train' is a section"),
    ("train.epochs.x=1", "config key 'train.epochs' is not a section"),
    ("crowd.min_size=6", "crowd.max_size (5) must be >= crowd.min_size (6)"),
    ("output_dir=ftp://host/runs", "config key 'output_dir': got 'ftp://host/runs'; ftp:// is not a supported storage"),
    ("semantic.encoder_model=gs://bucket/model", "remote storage (gs://) is not supported here"),
    ("llm.cache_dir=http://x/cache", "http:// is not a supported storage"),
    ("data.data_dir=hdfs://namenode/data", "hdfs:// is not a supported storage"),  # paths not <bucket>/<key>
    ("train", "key=value"),
    ("run_id=../escape", "config key 'run_id': got '../escape'; a run id is one folder name under output_dir"),
    ("run_id=/abs/run", "config key 'run_id': got '/abs/run'; a run id is one folder name"),
    ("run_id=.", "config key 'run_id': got '.'; a run id is one folder name"),
    ("run_id=a/b", "config key 'run_id': got 'a/b'"),
    ("previous_run=../x", "config key 'previous_run': got '../x'; a run id is one folder name"),
    ("run_id=latest", "'latest' names the pointer to the published run"),
])
def test_bad_overrides_are_one_clear_line(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_every_problem_gets_its_own_line():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.epochs=0", "eval.top_k=x"])
    lines = str(error.value).splitlines()
    assert len(lines) == 2 and "train.epochs" in lines[0] and "eval.top_k" in lines[1]


def test_yaml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: many\n  nope: 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    text = str(error.value)
    assert "config key 'train.epochs': got 'many'" in text and "unknown config key 'train.nope'" in text
    assert str(path) in text
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


def test_shipped_configs_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)


def test_every_key_has_a_type_default_and_meaning():
    rows = describe_keys()
    def leaves(node, prefix=""):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]

    assert [key for key, *_ in rows] == list(leaves(default_config()))
    assert all(kind and meaning for _, kind, _, meaning in rows)
    by_key = {key: (kind, default) for key, kind, default, _ in rows}
    assert by_key["train.epochs"] == ("int (>= 1)", "20")
    assert by_key["semantic.backend"][0] == "encoder | llm"
    assert by_key["eval.ks"] == ("list[int]", "[10, 20, 50]")


def test_rerun_with_other_data_settings_is_refused(tmp_path):
    from rec_core.run.directory import Run

    Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1"]))
    Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1", "models=[popularity]"]))  # allowed
    Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1", "llm.concurrency=2"]))  # resources only
    with pytest.raises(ConfigError, match="different data settings"):
        Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1", "data.k_core=5"]))
    for changed, section in (("align.weight=0.3", "align"), ("crowd.budget=10", "crowd"),
                             ("semantic.max_items=10", "semantic"), ("contrast.temperature=0.2", "contrast"),
                             ("llm.model=/models/other", "llm.model"), ("split.seed=1", "split")):
        with pytest.raises(ConfigError, match=f"different {section} settings"):
            Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1", changed]))


def write_generic(folder, interactions):
    folder.mkdir(exist_ok=True)
    (folder / "toy.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\tItem {i}\n" for i in range(4)))
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\n" + "".join(f"{u}\ti{i}\n" for u, i in interactions))


def test_rerun_with_changed_input_data_is_refused_and_a_touch_is_not_a_change(tmp_path):
    import os

    from jobs.ingest import ingest
    from rec_core.run.directory import Run

    data = tmp_path / "toy"
    write_generic(data, [(u, i) for u in range(6) for i in range(4)])
    overrides = [f"output_dir={tmp_path / 'runs'}", "run_id=night", "data.dataset=generic", f"data.path={data}",
                 "eval.top_k=3", "eval.ks=[1,3]", "split.ratios=[0.4,0.3,0.3]"]
    run = Run(load_config(None, overrides))
    ingest(run)
    recorded = run.manifest["data_fingerprint"]
    assert sorted(Path(f["path"]).name for f in recorded["files"]) == ["toy.inter", "toy.item"]
    assert run.manifest["stages"]["ingest"]["data_sha256"] == recorded["sha256"]
    os.utime(data / "toy.inter", (1, 1))  # same content, other mtime: still the same data
    Run(load_config(None, overrides))
    write_generic(data, [(u, i) for u in range(7) for i in range(4)])  # a new night's interactions
    with pytest.raises(ConfigError, match=r"input data changed since ingest \(.*toy.inter\)"):
        Run(load_config(None, overrides))
    (data / "toy.inter").unlink()
    with pytest.raises(ConfigError, match=r"toy.inter \(missing\)"):
        Run(load_config(None, overrides))


def test_rerun_with_other_code_is_refused(tmp_path, monkeypatch):
    import rec_core.run.directory as directory

    monkeypatch.setattr(directory, "code_version", lambda: "aaaa")
    directory.Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1"]))
    directory.Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1"]))  # the same code resumes
    monkeypatch.setattr(directory, "code_version", lambda: "bbbb")
    with pytest.raises(ConfigError, match="made by code aaaa, this is bbbb"):
        directory.Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1"]))


def test_date_in_a_run_id_is_the_utc_date_so_a_retry_of_the_night_resumes_it(tmp_path):
    import datetime

    from rec_core.run.directory import Run

    first = Run(load_config(None, [f"output_dir={tmp_path}", "run_id=nightly-{date}"]))
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    if first.run_id != f"nightly-{today}":  # the clock passed midnight UTC between the two reads
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    assert first.run_id == f"nightly-{today}" and Path(first.root) == tmp_path / f"nightly-{today}"
    again = Run(load_config(None, [f"output_dir={tmp_path}", "run_id=nightly-{date}"]))
    assert again.root == first.root and again.manifest["created"] == first.manifest["created"]


def test_code_version_without_git_comes_from_the_environment_or_the_stamp_file(tmp_path, monkeypatch):
    import shutil
    import subprocess

    checkout = tmp_path / "uploaded"  # what `ray job submit --working-dir` gives a job: no .git
    shutil.copytree(ROOT / "rec_core", checkout / "rec_core", ignore=shutil.ignore_patterns("__pycache__"))
    probe = [sys.executable, "-c", "from rec_core.run.directory import code_version; print(code_version())"]
    env = {"PATH": "/usr/bin:/bin", "GIT_CEILING_DIRECTORIES": str(tmp_path)}

    def version(**extra):
        return subprocess.run(probe, cwd=checkout, env={**env, **extra}, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert version() == "unknown"
    (checkout / "CODE_VERSION").write_text("1234abcd\n")
    assert version() == "1234abcd"
    assert version(LLMREC_CODE_VERSION="feedbeef") == "feedbeef"
    from rec_core.run.directory import code_version
    here = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if here:  # in a checkout git is the truth, whatever the environment says
        monkeypatch.setenv("LLMREC_CODE_VERSION", "feedbeef")
        assert code_version().startswith(here)


def test_fork_shares_the_stages_before_training_only_across_training_settings(tmp_path):
    import pandas as pd

    from rec_core.run.directory import Run, fork_upstream

    source = Run(load_config(None, [f"output_dir={tmp_path}", "run_id=p0", "models=[comirec_sa+contrast]"]))
    with source.stage("ingest") as info:
        info["rows"] = {"items": source.write_table("items", pd.DataFrame({"item_id": [0, 1]})), "users_train": 7}
    with source.stage("train:comirec_sa+contrast") as info:
        info["epochs"] = 3
    source.write_table("metrics", pd.DataFrame({"value": [0.5]}))

    forked = fork_upstream(source.root, load_config(None, [f"output_dir={tmp_path}", "run_id=p1",
                                                           "models=[comirec_sa+contrast]", "contrast.weight=0.3"]))
    assert forked.read_table("items")["item_id"].tolist() == [0, 1]
    assert forked.stage_done("ingest") and forked.manifest["stages"]["ingest"]["forked_from"] == str(source.root)
    assert not forked.stage_done("train:comirec_sa+contrast") and not forked.has_table("metrics")
    assert Run(forked.config).config["contrast"]["weight"] == 0.3  # the forked run reopens under its own config
    with pytest.raises(ConfigError, match="split settings differ"):
        fork_upstream(source.root, load_config(None, [f"output_dir={tmp_path}", "run_id=p2", "split.seed=1"]))
    with pytest.raises(ConfigError, match="already has stages"):
        fork_upstream(source.root, load_config(None, [f"output_dir={tmp_path}", "run_id=p1",
                                                      "models=[comirec_sa+contrast]", "contrast.weight=0.3"]))


def job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.refresh", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_print_config_and_help_from_the_command_line(tmp_path):
    printed = job("--print-config", "--config", str(ROOT / "configs" / "amazon-beauty.yaml"),
                  "train.learning_rate=1e-3", f"output_dir={tmp_path}")
    assert printed.returncode == 0, printed.stderr
    config = yaml.safe_load(printed.stdout)
    assert config["data"]["dataset"] == "amazon-beauty" and config["train"]["learning_rate"] == 0.001
    assert config == load_config(ROOT / "configs" / "amazon-beauty.yaml",
                                 ["train.learning_rate=1e-3", f"output_dir={tmp_path}"])
    assert not list(tmp_path.iterdir())  # printing runs nothing
    shown = job("--help")
    assert shown.returncode == 0
    for key, kind, _, meaning in describe_keys():
        assert key in shown.stdout
    assert "train.learning_rate" in shown.stdout and "float (> 0) = 0.001" in shown.stdout
    bad = job("eval.ks=[0]", "output_dir=ftp://bucket/x")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert [line.split(":")[0] for line in bad.stderr.splitlines()] == ["error", "error"]


def test_an_unwritable_output_dir_a_corrupt_manifest_and_a_damaged_table_are_one_clear_error(tmp_path):
    from rec_core.run.directory import Run

    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"output_dir=.*a-file: cannot write the run folder"):
        Run(load_config(None, [f"output_dir={tmp_path / 'a-file'}", "run_id=r1"]))
    run = Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1"]))
    with run.stage("ingest") as info:
        info["rows"] = {"items": run.write_table("items", __import__("pandas").DataFrame({"item_id": [0, 1]}))}
    (run.table_path("items") / "part-0.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(ConfigError, match=r"table 'items' of run .*r1 is damaged .* stage ingest must run again"):
        run.read_table("items")
    run.manifest_path.write_text('{"run_id": "r1", "stages": {')  # cut off mid-write by hand
    with pytest.raises(ConfigError, match=r"manifest.json is corrupt"):
        Run(load_config(None, [f"output_dir={tmp_path}", "run_id=r1"]))
