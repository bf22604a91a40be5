"""Checksummed Parquet part files: the storage of the caches that every run of an output_dir shares
(the LLM prompt cache, the text-embedding cache).

A part is written once, to a temporary name, then renamed to
`part-<time>-<random>.sha256-<first 16 hex digits of its SHA-256>.parquet`, so its name carries its
checksum and a reader needs no other record. A part that is truncated, altered or unreadable is
moved to `<folder>/quarantine/` with a warning and skipped: the rest of the cache is still used,
and what the bad part held is computed again (for the prompt cache: those prompts are sent again,
the only prompts that are). Parts written before checksummed names (no `.sha256-` in the name) are
checked by reading them only.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rec_core.storage.location import Location


log = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
QUARANTINE = "quarantine"
DIGEST_CHARS = 16
_DIGEST = re.compile(r"\.sha256-([0-9a-f]{%d})\.parquet$" % DIGEST_CHARS)


def write_part(folder: "str | os.PathLike | Location", table: pa.Table, stamp: str | None = None) -> Location:
    """Write `table` as a new part of `folder` (atomically) and return where. `stamp`: the time
    in its name (parts sort by it, the newest last); None: now, to the microsecond (to the second,
    two parts of one second sorted by their random suffix: a key's newer answer could lose to its
    older one; an older part's 14-digit stamp still sorts before a newer 20-digit one)."""
    folder = Location.of(folder)
    folder.mkdir()
    stem = f"part-{stamp or format(datetime.datetime.now(), '%Y%m%d%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    data = buffer.getvalue().to_pybytes()
    target = folder / f"{stem}.sha256-{hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]}.parquet"
    target.write_bytes(data)
    return target


class PartFolder:
    """The parts of one cache folder; `quarantined_` lists the parts this reader moved aside."""

    def __init__(self, folder: "str | os.PathLike | Location"):
        self.folder = Location.of(folder)
        self.quarantined_: list[str] = []

    def parts(self) -> list[Location]:
        return self.folder.glob(PART_GLOB)

    def read(self, part: Location, **read_options) -> pa.Table | None:
        """The part's table (pq.read_table options), or None when it is damaged (then quarantined).
        The file is fetched once: its checksum and its table come from the same bytes."""
        expected = _DIGEST.search(part.name)
        try:
            data = part.read_bytes()
            if expected and hashlib.sha256(data).hexdigest()[:DIGEST_CHARS] != expected.group(1):
                return self._quarantine(part, "its content does not match the checksum in its name")
            return pq.read_table(pa.BufferReader(data), **read_options)
        except FileNotFoundError:  # another reader quarantined it meanwhile
            return None
        except (pa.ArrowException, OSError) as error:
            return self._quarantine(part, str(error))

    def tables(self, **read_options) -> list[pa.Table]:
        return [table for part in self.parts() if (table := self.read(part, **read_options)) is not None]

    def count_quarantined(self, parts: list[Location]) -> int:
        """The parts of `parts` now in quarantine/ (moved aside by other processes reading them:
        `read_ordered`), added to `quarantined_`; returns how many."""
        aside = [part.name for part in parts if (self.folder / QUARANTINE / part.name).exists()]
        self.quarantined_.extend(name for name in aside if name not in self.quarantined_)
        return len(aside)

    def compact(self, key: str, max_parts: int, part_rows: int) -> int:
        """When the folder holds more than `max_parts` parts: runs of consecutive parts of fewer than
        `part_rows` rows are rewritten as parts of up to `part_rows` rows (a key's newest row kept),
        and the parts merged are removed; returns how many parts were removed. Every add writes a
        part (the LLM stage one per `llm.cache_flush_rows` answers: 15k parts at 1M prompts), and a
        lookup opens each, so without this the lookup's cost grows with the history of the cache.
        A merged part is named with the time of the newest part it holds, so the name order (newest
        last) stays the cache's. A reader that listed a part removed meanwhile skips it: its rows
        are computed again, a cost, never a wrong answer. Parts are read one at a time: the memory
        is one merged part's."""
        parts = self.parts()
        if len(parts) <= max_parts:
            return 0
        removed, run, rows = 0, [], 0

        def merge() -> None:
            nonlocal removed, rows
            if len(run) > 1:
                merged = pa.concat_tables([table for _, table in run], promote_options="default")
                keep = merged.to_pandas()[key].duplicated(keep="last").to_numpy()
                write_part(self.folder, merged.filter(pa.array(~keep)), stamp=run[-1][0].name.split("-")[1])
                for part, _ in run:
                    part.unlink(missing_ok=True)
                removed += len(run)
            run.clear()
            rows = 0

        for part in parts:
            table = self.read(part)
            if table is None:
                continue
            if table.num_rows >= part_rows or rows + table.num_rows > part_rows:
                merge()
            if table.num_rows < part_rows:
                run.append((part, table))
                rows += table.num_rows
        merge()
        if removed:
            log.info("cache %s: %d parts compacted into %d", self.folder, removed, len(self.parts()) - len(parts) + removed)
        return removed

    def _quarantine(self, part: Location, reason: str) -> None:
        aside = self.folder / QUARANTINE
        aside.mkdir()
        try:
            part.replace(aside / part.name)
        except FileNotFoundError:
            return None
        self.quarantined_.append(part.name)
        log.warning("cache part %s is damaged (%s): moved to %s; what it held is computed again",
                    part, reason, aside)
        return None


def read_ordered(folder: "str | Location", parts: list[str], positions: list[int], schema: pa.Schema) -> pa.Table:
    """The rows of `parts` (URIs of parts of `folder`) as `schema` plus `order`: the part's position
    in its folder's listing times 2^32 plus the row's in the part, so a key's newest row is the one
    of largest order, as in name order. Damaged parts are quarantined and give no rows. What a
    worker process (a Ray task of the prompt cache's `dataset`) runs on its share of a listing."""
    reader = PartFolder(folder)
    tables = []
    for part, position in zip(parts, positions):
        table = reader.read(Location.of(part), columns=schema.names)
        if table is not None:
            order = (int(position) << 32) + np.arange(table.num_rows, dtype=np.int64)
            tables.append(table.select(schema.names).cast(schema).append_column("order", pa.array(order)))
    return pa.concat_tables(tables) if tables else schema.append(pa.field("order", pa.int64())).empty_table()
