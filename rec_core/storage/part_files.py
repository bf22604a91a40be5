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
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


log = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
QUARANTINE = "quarantine"
DIGEST_CHARS = 16
_DIGEST = re.compile(r"\.sha256-([0-9a-f]{%d})\.parquet$" % DIGEST_CHARS)


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_part(folder: Path, table: pa.Table) -> Path:
    """Write `table` as a new part of `folder` (atomically) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"part-{datetime.datetime.now():%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"
    temporary = folder / f".{stem}.tmp"
    pq.write_table(table, temporary)
    target = folder / f"{stem}.sha256-{file_sha256(temporary)[:DIGEST_CHARS]}.parquet"
    os.replace(temporary, target)
    return target


class PartFolder:
    """The parts of one cache folder; `quarantined_` lists the parts this reader moved aside."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.quarantined_: list[str] = []

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob(PART_GLOB)) if self.folder.is_dir() else []

    def read(self, part: Path, **read_options) -> pa.Table | None:
        """The part's table (pq.read_table options), or None when it is damaged (then quarantined)."""
        expected = _DIGEST.search(part.name)
        try:
            if expected and file_sha256(part)[:DIGEST_CHARS] != expected.group(1):
                return self._quarantine(part, "its content does not match the checksum in its name")
            return pq.read_table(part, **read_options)
        except FileNotFoundError:  # another reader quarantined it meanwhile
            return None
        except (pa.ArrowException, OSError) as error:
            return self._quarantine(part, str(error))

    def tables(self, **read_options) -> list[pa.Table]:
        return [table for part in self.parts() if (table := self.read(part, **read_options)) is not None]

    def _quarantine(self, part: Path, reason: str) -> None:
        aside = self.folder / QUARANTINE
        aside.mkdir(exist_ok=True)
        try:
            os.replace(part, aside / part.name)
        except FileNotFoundError:
            return None
        self.quarantined_.append(part.name)
        log.warning("cache part %s is damaged (%s): moved to %s; what it held is computed again",
                    part, reason, aside)
        return None
