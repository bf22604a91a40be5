"""Write a synthetic data set in the generic input format (rec_core.data.synthetic says what is drawn).

    python -m jobs.synthetic --users 100000 --out /data/synthetic-100k [--items N] [--topics 48] [--seed 0]

Then run the job on it: `python -m jobs.refresh data.dataset=generic data.path=/data/synthetic-100k`.
Prints one JSON line: users, items, interactions, topics, seconds and the files written.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rec_core.data.datasets import write_generic
from rec_core.data.synthetic import synthetic_tables


def write_synthetic(folder: Path, users: int, items: int | None = None, topics: int = 48, seed: int = 0) -> dict:
    began = time.perf_counter()
    item_table, user_table, interactions = synthetic_tables(users, items, topics, seed)
    write_generic(item_table, interactions, user_table, folder)
    return {"users": int(interactions["user_id"].nunique()), "items": len(item_table),
            "interactions": len(interactions), "topics": topics, "seed": seed,
            "seconds": round(time.perf_counter() - began, 2),
            "files": sorted(str(path) for path in Path(folder).glob("data.*"))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, required=True, help="number of users (e.g. 10000 .. 1000000)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write data.inter and data.item into")
    parser.add_argument("--items", type=int, default=None, help="catalogue size (default max(2000, users / 10))")
    parser.add_argument("--topics", type=int, default=48, help="latent interests (item topics)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(write_synthetic(args.out, args.users, args.items, args.topics, args.seed)))
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
