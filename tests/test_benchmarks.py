"""The benchmark command line: every family's sub-commands are there, and the sweep grid parses."""

import pytest

from jobs.benchmark import main
from jobs.benchmarks.models import parse_grid
from rec_core.run.config import ConfigError


def test_every_benchmark_is_a_sub_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name in ("baselines", "alignment", "ablation", "descriptions", "paired", "sweep", "llm-throughput", "llm-cache", "grouping",
                 "max-cover"):
        assert name in text


def test_sweep_grid_is_every_combination():
    points = parse_grid(["contrast.weight=0.05,0.1", "contrast.temperature=0.1,0.2,0.5"])
    assert len(points) == 6
    assert points[0] == {"contrast.weight": "0.05", "contrast.temperature": "0.1"}
    assert points[-1] == {"contrast.weight": "0.1", "contrast.temperature": "0.5"}
    with pytest.raises(ConfigError, match="expected key=value1,value2"):
        parse_grid(["contrast.weight"])
