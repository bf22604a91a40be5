"""The crowd stages give byte-identical tables in two processes with different hash seeds (no
order from hashing, CP-SAT under a deterministic limit), with real Ray tasks, CP-SAT and Parquet."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
STAGES = """
import sys
from jobs.crowd_semantic import crowd_semantic
from jobs.ingest import ingest
from jobs.synthesize import synthesize
from rec_core.run.config import load_config
from rec_core.run.directory import Run

run = Run(load_config(None, sys.argv[1:]))
ingest(run)
synthesize(run)
crowd_semantic(run)
"""
TABLES = ("synthesized_users", "synthesized_semantic_clusters")


def run_crowd_stages(output_dir: Path, data_dir: Path, hash_seed: str) -> dict[str, bytes]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "RAY_ADDRESS": ""}
    overrides = [f"output_dir={output_dir}", "run_id=crowd", f"data.data_dir={data_dir}",
                 "models=[comirec_sa+contrast]", "crowd.backend=encoder"]
    done = subprocess.run([sys.executable, "-c", STAGES, *overrides], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {table: (output_dir / "crowd" / table / "part-0.parquet").read_bytes() for table in TABLES}


def test_crowd_tables_are_byte_identical_across_processes(data_dir, tmp_path):
    pytest.importorskip("sentence_transformers")
    first = run_crowd_stages(tmp_path / "a", data_dir, "1")
    second = run_crowd_stages(tmp_path / "b", data_dir, "2")
    for table in TABLES:
        assert len(first[table]) > 1000, table
        assert first[table] == second[table], f"{table} differs between two processes"
