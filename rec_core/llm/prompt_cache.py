"""Content-addressed cache of LLM answers, a Parquet table shared across runs.

key = sha256 of (model id, sampling parameters, rendered prompt), so a rerun, or a nightly refresh
where only some users' histories changed, sends only the prompts whose key is not cached yet.
Only answers without a request error are cached (a failed request is retried next time); an
answer that later fails validation is still cached, since asking again with the same key and
deterministic sampling would give the same answer.

The table lives in one folder (`<cache_dir>/`) as part files, one per `add` call, each written to
a temporary name and renamed, so a job killed while writing leaves no half-written part and any
number of runs can read it. Columns: key, model, output, num_input_tokens, num_generated_tokens,
created.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = ["key", "model", "output", "num_input_tokens", "num_generated_tokens", "created"]


def prompt_key(model: str, sampling_params: dict, prompt: str) -> str:
    payload = json.dumps([model, sampling_params, prompt], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class PromptCache:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def lookup(self, keys) -> pd.DataFrame:
        """Cached rows for the given keys (one row per key found; the newest wins)."""
        wanted = set(keys)
        parts = self.parts()
        if not parts or not wanted:
            return pd.DataFrame(columns=COLUMNS)
        table = pa.concat_tables([pq.read_table(part, filters=[("key", "in", list(wanted))]) for part in parts])
        frame = table.to_pandas()
        return frame.drop_duplicates("key", keep="last").reset_index(drop=True)

    def add(self, rows: pd.DataFrame) -> int:
        """Append answers (columns as COLUMNS, `created` optional); returns rows written."""
        if rows.empty:
            return 0
        rows = rows.copy()
        if "created" not in rows:
            rows["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        missing = [c for c in COLUMNS if c not in rows]
        if missing:
            raise ValueError(f"cache rows lack columns {missing}")
        name = f"part-{datetime.datetime.now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        temporary = self.folder / f".{name}.tmp"
        pq.write_table(pa.Table.from_pandas(rows[COLUMNS], preserve_index=False), temporary)
        os.replace(temporary, self.folder / name)
        return len(rows)

    def __len__(self) -> int:
        return sum(pq.read_metadata(p).num_rows for p in self.parts())
