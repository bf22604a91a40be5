"""Where a run, a cache or a table lives: a local folder or an object store, through `pyarrow.fs`.

`Location.of(text)` takes a local path (`runs`, `/shared/runs`, `file:///shared/runs`) or an object
store's URI that pyarrow's `FileSystem.from_uri` opens with `<bucket>/<key>` paths (`s3://bucket/runs`,
`gs://bucket/runs`; rec_core.run.config.STORAGE_SCHEMES), so `output_dir=s3://bucket/runs` runs on a
cluster that has no shared POSIX volume: every node reaches the same tables. The query of an S3 URI configures the client (pyarrow's names), e.g.
`s3://runs/nightly?endpoint_override=minio.local:9000&scheme=http` for an S3-compatible server;
credentials come from the usual places (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an
instance role), never from the config.

A Location reads like a `pathlib.Path` (`/`, `name`, `parent`, `is_dir`, `glob`, `read_text`, ...)
and pickles as its URI, so a Ray actor or a Ray Train worker on another node opens the same place.
What differs between the two kinds, and how it is handled here:

- Atomic writes: locally a file is written to a temporary name beside its target and renamed; on
  an object store one upload is atomic already (an object appears whole or not at all), so it is
  written in place.
- Folders: an object store has none; `mkdir` does nothing there and a folder exists while it
  holds an object.
- `replace` (rename): atomic locally; on an object store a copy then a delete.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import io
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

LOCAL_SCHEMES = ("", "file")


def local_path(where: "str | os.PathLike") -> Path | None:
    """The local path that `where` names (a plain path or file://), None for an object store's URI;
    read from the text alone, so nothing is opened (a bucket's client needs the network)."""
    text = os.fspath(where)
    scheme, separator, rest = text.partition("://")
    if separator and scheme not in LOCAL_SCHEMES:
        return None
    return Path(rest if separator else text).expanduser().resolve()


@functools.lru_cache(maxsize=None)
def _filesystem(scheme: str, bucket: str, query: str) -> pafs.FileSystem:
    """One client per (scheme, bucket, options) in a process (an S3 client holds connections)."""
    return pafs.FileSystem.from_uri(f"{scheme}://{bucket}" + (f"?{query}" if query else ""))[0]


class Location:
    """A file or folder on a local disk or an object store (see the module docstring)."""

    __slots__ = ("fs", "path", "scheme", "query")

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str = "", query: str = ""):
        self.fs, self.path, self.scheme, self.query = fs, path.rstrip("/") or "/", scheme, query

    @classmethod
    def of(cls, where: "str | os.PathLike | Location") -> "Location":
        if isinstance(where, Location):
            return where
        text = os.fspath(where)
        local = local_path(text)
        if local is not None:
            return cls(pafs.LocalFileSystem(), str(local))
        scheme, _, rest = text.partition("://")
        rest, _, query = rest.partition("?")
        bucket = rest.split("/", 1)[0]
        if not bucket:
            raise ValueError(f"{text}: no bucket or host after {scheme}://")
        return cls(_filesystem(scheme, bucket, query), rest, scheme, query)

    # ------------------------------------------------------------------ naming

    @property
    def is_local(self) -> bool:
        return self.scheme == ""

    def as_path(self) -> Path:
        """The local path (only for a local Location: a library that wants a file name)."""
        if not self.is_local:
            raise ValueError(f"{self} is not on a local disk")
        return Path(self.path)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        return Location(self.fs, self.path.rsplit("/", 1)[0] or "/", self.scheme, self.query)

    def __truediv__(self, name: str) -> "Location":
        return Location(self.fs, f"{self.path}/{name}", self.scheme, self.query)

    def __str__(self) -> str:
        if self.is_local:
            return self.path
        return f"{self.scheme}://{self.path}" + (f"?{self.query}" if self.query else "")

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __reduce__(self):  # pickles as its URI: the receiving process opens its own client
        return Location.of, (str(self),)

    def __fspath__(self) -> str:
        """A local Location is a path to every library that takes one (open, pq.read_table, shutil);
        a remote one refuses, naming itself, instead of being taken for a relative local path."""
        return str(self.as_path())

    # ------------------------------------------------------------------ queries

    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def size(self) -> int:
        info = self._info()
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{self} is not a file")
        return info.size

    def iterdir(self) -> list["Location"]:
        """The entries directly in this folder, by name (none when it does not exist)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted((Location(self.fs, info.path, self.scheme, self.query) for info in infos),
                      key=lambda location: location.name)

    def glob(self, pattern: str) -> list["Location"]:
        """The entries directly in this folder whose names match `pattern` (fnmatch), by name."""
        return [entry for entry in self.iterdir() if fnmatch.fnmatchcase(entry.name, pattern)]

    # ------------------------------------------------------------------ reading

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path, compression=None) as stream:
            return stream.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open_input(self):
        """A seekable pyarrow file (Parquet and the CSV reader take it)."""
        return self.fs.open_input_file(self.path)

    def open(self):
        """A buffered binary Python file for reading (lines, gzip, csv, io.TextIOWrapper): the
        local file itself, or the object's stream (bytes as stored: no decompression)."""
        if self.is_local:
            return open(self.path, "rb")
        return io.BufferedReader(_RawStream(self.fs.open_input_stream(self.path, compression=None)), 1 << 20)

    def modified(self) -> float:
        """The file's modification time (seconds since the epoch; an object's upload time)."""
        return self._info().mtime.timestamp()

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self.path, compression=None) as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    # ------------------------------------------------------------------ writing

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        if self.is_local:
            Path(self.path).mkdir(parents=parents, exist_ok=exist_ok)

    def temporary_sibling(self) -> "Location":
        """A name beside this one that no other writer uses (then `replace` onto this one)."""
        return self.parent / f".{self.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"

    @contextmanager
    def writing(self):
        """The path to write this file at, for an atomic write: locally a temporary name beside it
        (its folder made, as an object store needs none), renamed onto this one when the block ends
        without an error and removed otherwise; on an object store this path itself (one upload is
        atomic)."""
        if not self.is_local:
            yield self.path
            return
        temporary = self.temporary_sibling()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            yield temporary.path
            os.replace(temporary.path, self.path)
        finally:
            Path(temporary.path).unlink(missing_ok=True)

    def write_bytes(self, data: bytes) -> None:
        """Write atomically (`writing`): a reader sees the old content or the whole new one."""
        with self.writing() as path, self.fs.open_output_stream(path, compression=None) as stream:
            stream.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def replace(self, target: "Location") -> None:
        """Move this file onto `target` (atomic locally; a copy, then a delete, on an object store)."""
        if self.is_local:
            os.replace(self.path, target.path)
        else:
            self.fs.move(self.path, target.path)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove_tree(self) -> None:
        """Delete this folder and everything in it (nothing when it does not exist)."""
        if self.exists():
            self.fs.delete_dir(self.path)

    def copy_tree(self, target: "Location") -> None:
        """Copy every file under this folder to the same relative place under `target`."""
        for info in self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True)):
            if info.type == pafs.FileType.File:
                destination = target / info.path[len(self.path) + 1:]
                destination.parent.mkdir()
                pafs.copy_files(info.path, destination.path, source_filesystem=self.fs,
                                destination_filesystem=target.fs)


class _RawStream(io.RawIOBase):
    """A pyarrow input stream as a Python raw file (pyarrow's streams have no readline)."""

    def __init__(self, stream):
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


# ---------------------------------------------------------------------- Parquet on a Location


def write_parquet(table: pa.Table, target: Location) -> None:
    """`table` as the Parquet file `target`, atomically (Location.writing)."""
    with target.writing() as path:
        pq.write_table(table, path, filesystem=target.fs)


def read_parquet(source: "Location | list[Location]", **options) -> pa.Table:
    """A Parquet file, a folder of them, or a list of files (in that order) of one filesystem;
    `options`: pq.read_table's (columns, filters)."""
    if isinstance(source, list):
        if not source:
            raise ValueError("no Parquet files to read")
        return pq.read_table([location.path for location in source], filesystem=source[0].fs, **options)
    return pq.read_table(source.path, filesystem=source.fs, **options)


def parquet_dataset(source: Location) -> ds.Dataset:
    """A pyarrow dataset over a Parquet folder (streamed reads: to_batches)."""
    return ds.dataset(source.path, filesystem=source.fs, format="parquet")


def parquet_rows(source: Location) -> int:
    """Rows of one Parquet file, from its footer."""
    with source.open_input() as handle:
        return pq.read_metadata(handle).num_rows
