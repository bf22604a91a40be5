"""Command line shared by every job: `--config FILE` plus `key=value` overrides."""

from __future__ import annotations

import argparse
import logging
import sys

from rec_core.config import ConfigError, load_config
from rec_core.datasets import DataError


def parse(argv: list[str] | None, description: str) -> dict:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML run config (see configs/ and rec_core/config.py)")
    parser.add_argument("--data-dir", help="folder holding the data sets (same as data.data_dir=...)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=5 run_id=nightly")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    setup_logging()
    return load_config(args.config, overrides)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)


def main_guard(function, argv=None, description="") -> None:
    """Run a job; a bad config or bad data ends with one clear line and exit code 2."""
    try:
        function(parse(argv, description))
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
