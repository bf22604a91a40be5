"""Benchmarks, one module per family, all behind `python -m jobs.benchmark <name>` (jobs/benchmark.py):

- `models`: model quality and training throughput (`baselines`, `alignment`, `ablation`);
- `llm`: the LLM stage (`llm-throughput`, `llm-cache`, `grouping`);
- `crowd`: the max-cover solver (`max-cover`);
- `distill`: session distillation (`distill`, `selection-cost`);
- `incremental`: an incremental night against a full run on the same data (`incremental`);
- `scale`: every stage's time and memory on synthetic data from 10k to 1M users (`scale`).

Each module's `add_commands(subparsers)` declares its sub-commands; each prints figures (a table,
then JSON lines). A benchmark writes its runs under `output_dir` with a run id naming the benchmark
and the clock (`bench_run_id`), so that a repeated benchmark never reuses an earlier run's stages.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from jobs.ingest import ingest
from rec_core.run.config import ConfigError, load_config
from rec_core.run.directory import Run
from rec_core.storage.location import local_path


def bench_run_id(name: str, dataset: str) -> str:
    return f"bench-{name}-{dataset}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def local_folder(config: dict, name: str, benchmark: str) -> Path:
    """`<output_dir>/<name>` on the local disk, for the benchmarks that write data sets and copy or
    compare run folders with local file tools (`incremental`, `scale`); an object store's
    output_dir is a clear error rather than a folder named after the URI."""
    root = local_path(config["output_dir"])
    if root is None:
        raise ConfigError(f"benchmark {benchmark}: output_dir={config['output_dir']} is an object store; this "
                          "benchmark writes its data and run folders on a local disk: give a local output_dir")
    return root / name


def ingested_run(dataset: str, config_path: str | None, overrides: list[str], name: str) -> Run:
    """A fresh benchmark run (`bench_run_id`) of `dataset` with its tables ingested."""
    run = Run(load_config(config_path, [f"data.dataset={dataset}", f"run_id={bench_run_id(name, dataset)}",
                                        *overrides]))
    ingest(run)
    return run


def add_data_arguments(parser, dataset_required: bool = False) -> None:
    """--dataset, --config and trailing key=value overrides, as every benchmark takes them."""
    if dataset_required:
        parser.add_argument("--dataset", required=True)
    else:
        parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--config", default=None, help="YAML run config under the overrides")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
