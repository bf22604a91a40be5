"""Command line shared by every job: `--config FILE`, `key=value` overrides, `--print-config`, and
`--help` listing every option (generated from the schema in rec_core.run.config)."""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from rec_core.data.datasets import DataError
from rec_core.run.config import ConfigError, keys_help, load_config
from rec_core.run.publish import GateRefused
from rec_core.run.stopping import shutdown_ray, stop_cleanly_on_sigterm, stopped_by


def parse(argv: list[str] | None, description: str, default_config_file: str | None = None) -> dict | None:
    """The resolved config, or None when --print-config printed it (the caller then stops).
    `default_config_file`: the job's own defaults when no --config is given (e.g. jobs.distill)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="options (key=value; type = default, then meaning):\n" + keys_help())
    parser.add_argument("--config", help="YAML run config (see configs/); overrides come on top of it")
    parser.add_argument("--data-dir", help="folder holding the data sets (same as data.data_dir=...)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as YAML and exit without running")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=5 models=[mind,comirec_sa]")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    config = load_config(args.config or default_config_file, overrides)
    if args.print_config:
        print(config_yaml(config), end="")
        return None
    setup_logging()
    return config


class _FlowListDumper(yaml.SafeDumper):
    """Sections as blocks, lists inline (`ks: [10, 20, 50]`): the form a config file is written in."""


_FlowListDumper.add_representer(list, lambda dumper, value: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", value, flow_style=True))


def config_yaml(config: dict) -> str:
    return yaml.dump(config, Dumper=_FlowListDumper, sort_keys=False, default_flow_style=False)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)


GATE_REFUSED_EXIT = 3  # the run finished but the quality gate kept yesterday's publication


def main_guard(function, argv=None, description="", default_config_file: str | None = None) -> None:
    """Run a job; a bad config or bad data ends with one clear line per problem and exit code 2, a
    run the quality gate refused with its reason and exit code 3, SIGTERM with exit code 143. After a
    job that succeeded, the Ray it started is shut down (rec_core.run.stopping.shutdown_ray)."""
    stop_cleanly_on_sigterm()
    try:
        config = parse(argv, description, default_config_file)
        if config is not None:
            function(config)
            shutdown_ray()
    except (ConfigError, DataError) as error:
        for line in str(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except GateRefused as error:
        print(f"refused: {error}", file=sys.stderr)
        sys.exit(GATE_REFUSED_EXIT)
    except SystemExit:
        if stopped_by():
            sys.exit(128 + stopped_by())
        raise
