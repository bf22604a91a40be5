"""Content-addressed cache of LLM answers, a Parquet table shared across runs.

key = sha256 of (model id, sampling parameters, rendered prompt), so a rerun, or a nightly refresh
where only some users' histories changed, sends only the prompts whose key is not cached yet.
Only answers without a request error are cached (a failed request is retried next time); an
answer that later fails validation is still cached, since asking again with the same key and
deterministic sampling would give the same answer.

The table lives in one folder (`<cache_dir>/`) as part files, one per `add` call (the LLM stage
compacts them once there are more than `llm.cache_max_parts`), each written to a temporary name
and renamed, so a job killed while writing leaves no half-written part and any
number of runs can read it. Each part's name carries its checksum: a truncated or altered part is
quarantined when read and its prompts are sent again, the rest of the cache is used
(rec_core.storage.part_files; `quarantined_`). Columns: key, model, output, num_input_tokens,
num_generated_tokens, created.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import pandas as pd
import pyarrow as pa

from rec_core.storage.location import Location
from rec_core.storage.part_files import PartFolder, read_ordered, write_part

COLUMNS = ["key", "model", "output", "num_input_tokens", "num_generated_tokens", "created"]
ANSWER_SCHEMA = pa.schema([("key", pa.string()), ("output", pa.string()), ("num_input_tokens", pa.int64()),
                           ("num_generated_tokens", pa.int64())])  # what a lookup needs of a row


def prompt_key(model: str, sampling_params: dict, prompt: str) -> str:
    payload = json.dumps([model, sampling_params, prompt], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class PromptCache:
    def __init__(self, folder: "str | os.PathLike | Location"):
        self.folder = Location.of(folder)
        self.folder.mkdir()
        self._parts = PartFolder(self.folder)
        self.quarantined_ = self._parts.quarantined_  # damaged parts this cache moved aside

    def parts(self) -> list[Location]:
        return self._parts.parts()

    def lookup(self, keys) -> pd.DataFrame:
        """Cached rows for the given keys (one row per key found; the newest wins)."""
        wanted = set(keys)
        tables = self._parts.tables(filters=[("key", "in", list(wanted))]) if wanted else []
        if not tables:
            return pd.DataFrame(columns=COLUMNS)
        frame = pa.concat_tables(tables).to_pandas()
        return frame.drop_duplicates("key", keep="last").reset_index(drop=True)

    def dataset(self, parts: list[Location]):
        """The answers of `parts` (a listing from `parts()`) as a Ray Dataset (ANSWER_SCHEMA + `order`:
        a key's newest answer has the largest), each part read and checked by a Ray task; the LLM
        stage joins its prompts against it. `count_quarantined(parts)` afterwards counts the damaged."""
        import ray

        listing = ray.data.from_items([{"part": str(part), "position": position}
                                       for position, part in enumerate(parts)])
        return listing.map_batches(_read_answers, batch_size=1, batch_format="pandas",
                                   fn_kwargs={"folder": str(self.folder)})

    def count_quarantined(self, parts: list[Location]) -> int:
        return self._parts.count_quarantined(parts)

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
        write_part(self.folder, pa.Table.from_pandas(rows[COLUMNS], preserve_index=False))
        return len(rows)

    def compact(self, max_parts: int, part_rows: int) -> int:
        """Merge small parts once there are more than `max_parts` (PartFolder.compact; the stage's
        llm.cache_max_parts / llm.cache_part_rows); returns the parts removed."""
        return self._parts.compact("key", max_parts, part_rows)

    def __len__(self) -> int:
        return sum(table.num_rows for table in self._parts.tables(columns=["key"]))


def _read_answers(listing: pd.DataFrame, folder: str) -> pa.Table:
    """A Ray task of PromptCache.dataset: the answers of its listed parts (each checked)."""
    return read_ordered(folder, listing["part"].tolist(), listing["position"].tolist(), ANSWER_SCHEMA)
