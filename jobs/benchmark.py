"""Benchmarks: commands that print figures (a table, then one JSON line per figure).

    python -m jobs.benchmark baselines --dataset amazon-beauty [--config FILE] [key=value ...]
    python -m jobs.benchmark alignment --dataset movielens-100k --seeds 3 --backend encoder
    python -m jobs.benchmark ablation --dataset amazon-beauty --config configs/amazon-beauty.yaml --seeds 3
    python -m jobs.benchmark descriptions --dataset amazon-beauty --config configs/amazon-beauty.yaml --seeds 5
    python -m jobs.benchmark llm-throughput | llm-cache | grouping | prompt-lookup ...   (jobs/benchmarks/llm.py)
    python -m jobs.benchmark max-cover --dataset amazon-beauty          (jobs/benchmarks/crowd.py)
    python -m jobs.benchmark distill --dataset sessions-hetrec-ml --config configs/sessions-hetrec-ml.yaml
    python -m jobs.benchmark selection-cost --pool 1000000             (jobs/benchmarks/distill.py)
    python -m jobs.benchmark incremental --dataset amazon-beauty --config configs/amazon-beauty.yaml
    python -m jobs.benchmark scale --sizes 10000,100000,1000000      (jobs/benchmarks/scale.py)
    python -m jobs.benchmark stage-memory --stage semantic --ingest key=value ...

Each family lives in its own module of jobs/benchmarks/ and says there what it measures and how.
"""

from __future__ import annotations

import argparse

from jobs.benchmarks import crowd, distill, incremental, llm, models, scale
from rec_core.run.cli import setup_logging
from rec_core.run.config import ConfigError


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="benchmark", required=True)
    for family in (models, distill, llm, crowd, incremental, scale):
        family.add_commands(commands)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        args.run(args)
    except ConfigError as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
