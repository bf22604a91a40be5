"""Loaders that turn every supported source format into the canonical tables.

Canonical tables (pandas in memory, Parquet on disk; ids dense int64, the source id kept):

    items         item_id, source_id, title, text,       text = title plus genres / categories;
                  labels                                 labels = genres (MovieLens), leaf categories
                                                         (Amazon), `categories` split on '|' (generic)
    users         user_id, source_id
    interactions  user_id, item_id, ts                   ts = timestamp, or order index if none
    sessions      session_id, pos, item_id               session data only (pos 0.. in time order)

For session data each session is also a "user" in `interactions` (the sessions carry no user ids).

Built-in data sets (folder names of ../shared/data): see BUILTIN. The generic format, which a user
can write by hand, is RecBole's atomic files in one folder:

    <name>.inter   TSV with header, e.g. `user_id:token<TAB>item_id:token<TAB>timestamp:float`
    <name>.item    TSV with header, e.g. `item_id:token<TAB>title:token_seq<TAB>categories:token_seq`

Column names are matched on the part before ':'. `.inter` needs user_id and item_id, timestamp is
optional (file order is used without it). `.item` needs item_id; `title` is optional, and every
other column is appended to the text; a `categories` column ('|'-separated) also gives the labels. Interactions with an item id missing from `.item` are an
error or, with `unknown_items="skip"`, a counted skip.

Bad input raises DataError naming the file and line; drops that are safe are counted in
`Tables.skips` and logged.

The data folders (data.data_dir, data.path) are local paths or object-store URIs (s3://bucket/data,
...): every file is read through rec_core.storage.location (pyarrow.fs), so a cluster without a
shared volume reads its data from a bucket.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rec_core.storage.location import Location

log = logging.getLogger(__name__)

BUILTIN = {
    "movielens-100k": "movielens-100k",
    "movielens-1m": "movielens-1m",
    "amazon-beauty": "amazon-beauty-5core-p5",
    "amazon-toys": "amazon-toys-5core-p5",
    "sessions-hetrec-ml": "sessions-hetrec2011-ml-alkdrec",
    "sessions-amazon-games": "sessions-amazon-games-alkdrec",
}


class DataError(ValueError):
    """Input data that cannot be read; the message names the file and line."""


@dataclass
class Tables:
    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame
    sessions: pd.DataFrame | None = None
    skips: dict[str, int] = field(default_factory=dict)
    source_files: list[str] = field(default_factory=list)  # every file the loader read (the run's data identity)

    @property
    def num_items(self) -> int:
        return len(self.items)

    def row_counts(self) -> dict[str, int]:
        counts = {"items": len(self.items), "users": len(self.users),
                  "interactions": len(self.interactions)}
        if self.sessions is not None:
            counts["sessions"] = int(self.sessions["session_id"].nunique())
        return counts


# --------------------------------------------------------------------------- locating data


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Location:
    """Explicit path or URI (config / --data-dir), then $REC_DATA_DIR, then ../shared/data beside the checkout."""
    if explicit:
        origin, path = "data.data_dir", Location.of(explicit)
    elif os.environ.get("REC_DATA_DIR"):
        origin, path = "$REC_DATA_DIR", Location.of(os.environ["REC_DATA_DIR"])
    else:
        origin, path = "../shared/data beside the checkout", Location.of(
            Path(__file__).resolve().parents[3] / "shared" / "data")
    if not path.is_dir():
        raise DataError(f"data directory not found: {path} (from {origin}); set data.data_dir=... "
                        "or $REC_DATA_DIR")
    return path


_FILES_READ: ContextVar[list | None] = ContextVar("files_read", default=None)


@contextmanager
def _recording_reads():
    """Collects the path of every file a loader opens (each goes through `_require`)."""
    read: list[str] = []
    token = _FILES_READ.set(read)
    try:
        yield read
    finally:
        _FILES_READ.reset(token)


def _require(path: "str | os.PathLike | Location") -> Location:
    path = Location.of(path)
    if not path.is_file():
        raise DataError(f"missing data file: {path}")
    if (read := _FILES_READ.get()) is not None:
        read.append(str(path))
    return path


def _lines(path: "str | os.PathLike | Location", encoding: str = "utf-8"):
    """(line_number, stripped line) for non-empty lines; handles .gz. Bytes that are not `encoding`
    are a DataError naming the line (a catalogue's text is not trusted to be clean). Lines are
    decoded one by one (the encodings read here are ASCII-compatible, so b"\\n" ends a line)."""
    path = _require(path)
    with path.open() as stored:
        handle = gzip.GzipFile(fileobj=stored) if path.name.endswith(".gz") else stored
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}:{number}: not valid {encoding} text ({error.reason} at column "
                                f"{error.start + 1}: {raw[error.start:error.start + 4]!r}); re-encode the file "
                                f"as {encoding}") from None
            if line.strip():
                yield number, line


INT64_MAX = np.iinfo(np.int64).max


def _int(value: str, path: Location, number: int, what: str) -> int:
    try:
        parsed = int(value)
    except ValueError:
        raise DataError(f"{path}:{number}: {what} is not an integer: {value!r}") from None
    if abs(parsed) > INT64_MAX:
        raise DataError(f"{path}:{number}: {what} {value!r} is out of range (beyond 64-bit integers)")
    return parsed


# --------------------------------------------------------------------------- assembly

EVENT_COLUMNS = ["user_source", "item_source", "ts"]


def _assemble(item_rows: list[tuple[str, str, str]], events, source_name: str, unknown_items: str,
              skips: Counter) -> Tables:
    """Dense ids from source ids; drops or rejects events whose item has no item row. `events`:
    (user source id, item source id, ts) tuples, or a frame of those three columns (strings may be
    categorical: every id is mapped once per distinct value). Users are numbered in order of first
    appearance."""
    items = pd.DataFrame(item_rows, columns=["source_id", "title", "text", "labels"])
    duplicated = items["source_id"].duplicated()
    if duplicated.any():
        raise DataError(f"{source_name}: duplicate item id(s) {items.loc[duplicated, 'source_id'].head(5).tolist()}")
    items.insert(0, "item_id", np.arange(len(items), dtype=np.int64))
    item_index = dict(zip(items["source_id"], items["item_id"]))

    frame = events if isinstance(events, pd.DataFrame) else pd.DataFrame(events, columns=EVENT_COLUMNS)
    item_codes, item_sources = pd.factorize(frame["item_source"])
    known = pd.Series(np.asarray(item_sources, dtype=object)).map(item_index).to_numpy(np.float64)[item_codes]
    missing = np.isnan(known)
    if missing.any():
        examples = frame.loc[missing, "item_source"].head(5).tolist()
        if unknown_items == "error":
            raise DataError(f"{source_name}: {int(missing.sum())} interaction(s) name item ids that are "
                            f"not in the item file, e.g. {examples} (set data.unknown_items=skip to drop them)")
        skips["interactions_with_unknown_item"] += int(missing.sum())
        log.warning("%s: skipped %d interactions with unknown item ids, e.g. %s",
                    source_name, int(missing.sum()), examples)
        frame = frame[~missing]
        known = known[~missing]
    user_codes, user_sources = pd.factorize(frame["user_source"])  # codes in order of first appearance
    users = pd.DataFrame({"user_id": np.arange(len(user_sources), dtype=np.int64),
                          "source_id": np.asarray(user_sources, dtype=object).astype(str)})
    interactions = pd.DataFrame({
        "user_id": user_codes.astype(np.int64),
        "item_id": known.astype(np.int64),
        "ts": frame["ts"].to_numpy(np.int64),
    })
    interactions = sort_interactions(interactions)
    return Tables(items=items, users=users, interactions=interactions, skips=dict(skips))


def sort_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """Chronological per user; ties keep file order (stable sort)."""
    return interactions.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- built-in formats


def load_movielens_100k(folder: Location, unknown_items: str = "error") -> Tables:
    genres_path = _require(folder / "u.genre")
    genre_names = {}
    for number, line in _lines(genres_path, "latin-1"):
        name, _, index = line.partition("|")
        genre_names[_int(index, genres_path, number, "genre index")] = name
    if sorted(genre_names) != list(range(len(genre_names))):
        gaps = sorted(set(range(max(genre_names, default=-1) + 1)) - set(genre_names))
        raise DataError(f"{genres_path}: genre indices must be 0..{len(genre_names) - 1}, one per u.item flag "
                        f"column; got {sorted(genre_names)[:10]} (missing {gaps[:10]})")
    item_path = folder / "u.item"
    items = []
    for number, line in _lines(item_path, "latin-1"):
        fields = line.split("|")
        if len(fields) != 5 + len(genre_names):
            raise DataError(f"{item_path}:{number}: expected {5 + len(genre_names)} '|'-separated fields, "
                            f"got {len(fields)}")
        flags = fields[5:]
        genres = [genre_names[i] for i, flag in enumerate(flags) if flag == "1" and genre_names[i] != "unknown"]
        title = fields[1].strip()
        items.append((fields[0], title, _with_labels(title, genres), genres))
    data_path = folder / "u.data"
    events = []
    for number, line in _lines(data_path):
        fields = line.split("\t")
        if len(fields) != 4:
            raise DataError(f"{data_path}:{number}: expected 4 tab-separated fields "
                            f"(user, item, rating, timestamp), got {len(fields)}: {line!r}")
        _int(fields[2], data_path, number, "rating")
        events.append((fields[0], fields[1], _int(fields[3], data_path, number, "timestamp")))
    return _assemble(items, events, str(data_path), unknown_items, Counter())


def load_movielens_1m(folder: Location, ratings: str = "timestamped", unknown_items: str = "error") -> Tables:
    """`timestamped`: every rating of users 1-2999 with its timestamp (chronological order).
    `pairs`: all 1,000,209 (user, movie) pairs, ordered as in the file (not chronological)."""
    movies_path = folder / "movies.dat"
    items = []
    for number, line in _lines(movies_path, "latin-1"):
        fields = line.split("::")
        if len(fields) != 3:
            raise DataError(f"{movies_path}:{number}: expected MovieID::Title::Genres, got {line!r}")
        genres = [g for g in fields[2].split("|") if g]
        items.append((fields[0], fields[1].strip(), _with_labels(fields[1].strip(), genres), genres))
    if ratings == "timestamped":
        path, expected = folder / "ratings.users-0001-2999.dat.gz", 4
    elif ratings == "pairs":
        path, expected = folder / "ratings_pairs.dat.gz", 2
    else:
        raise DataError(f"data.ml1m_ratings must be 'timestamped' or 'pairs', got {ratings!r}")
    events = []
    for number, line in _lines(path):
        fields = line.split("::")
        if len(fields) != expected:
            raise DataError(f"{path}:{number}: expected {expected} '::'-separated fields, got {line!r}")
        ts = _int(fields[3], path, number, "timestamp") if expected == 4 else number
        events.append((fields[0], fields[1], ts))
    return _assemble(items, events, str(path), unknown_items, Counter())


def load_amazon_5core(folder: Location, unknown_items: str = "error") -> Tables:
    """P5-lineage 5-core sequences: `sequential_data.txt` (user item item ...) in time order."""
    items_path = folder / "items.jsonl"
    items = []
    for number, line in _lines(items_path):
        try:
            record = json.loads(line)
            item_id, title = record["item_id"], str(record.get("title") or "").strip()
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"{items_path}:{number}: not an item record ({error}): {line[:80]!r}") from None
        paths = [path for path in record.get("categories") or [] if path]
        leaves = list(dict.fromkeys(path[-1] for path in paths))
        items.append((str(item_id), title, _with_labels(title, [" > ".join(p) for p in paths]), leaves))
    seq_path = folder / "sequential_data.txt"
    events = []
    for number, line in _lines(seq_path):
        fields = line.split()
        for value in fields:
            _int(value, seq_path, number, "id")
        if len(fields) < 2:
            raise DataError(f"{seq_path}:{number}: user {fields[0]} has no interactions")
        events.extend((fields[0], item, position) for position, item in enumerate(fields[1:]))
    return _assemble(items, events, str(seq_path), unknown_items, Counter())


def load_alkdrec_sessions(folder: Location, unknown_items: str = "error") -> Tables:
    """ALKDRec session files: `sessions.tsv` (session_id, prefix, label) and `items.csv` (itemID,title).

    Items that occur in sessions but have no title row are kept with an empty title (they are real
    items the sessions point to) and counted in skips["items_without_title"]. Sessions with an
    empty prefix cannot be evaluated and are dropped, counted in skips["sessions_without_prefix"]."""
    import csv

    titles_path = _require(folder / "items.csv")
    titles: dict[str, str] = {}
    with io.TextIOWrapper(titles_path.open(), encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["itemID", "title"]:
            raise DataError(f"{titles_path}:1: expected header 'itemID,title', got {header}")
        for row in reader:
            if len(row) != 2:
                raise DataError(f"{titles_path}:{reader.line_num}: expected 2 fields, got {len(row)}")
            titles[row[0]] = row[1].strip()
    sessions_path = folder / "sessions.tsv"
    skips: Counter = Counter()
    rows = []
    seen_items: dict[str, None] = {}
    for number, line in _lines(sessions_path):
        fields = line.split("\t")
        if number == 1:
            if fields != ["session_id", "prefix", "label"]:
                raise DataError(f"{sessions_path}:1: expected header session_id/prefix/label, got {fields}")
            continue
        if len(fields) != 3:
            raise DataError(f"{sessions_path}:{number}: expected 3 tab-separated fields, got {len(fields)}")
        prefix = fields[1].split()
        if not prefix:
            skips["sessions_without_prefix"] += 1
            continue
        for position, item in enumerate(prefix + [fields[2].strip()]):
            rows.append((fields[0], item, position))
            seen_items.setdefault(item, None)
    item_rows = []
    for source_id in seen_items:
        title = titles.get(source_id, "")
        if not title:
            skips["items_without_title"] += 1
        item_rows.append((source_id, title, title, []))
    if skips:
        log.warning("%s: %s", folder.name, dict(skips))
    tables = _assemble(item_rows, rows, str(sessions_path), unknown_items, skips)
    tables.sessions = pd.DataFrame({
        "session_id": tables.interactions["user_id"].to_numpy(),
        "pos": tables.interactions["ts"].to_numpy(),
        "item_id": tables.interactions["item_id"].to_numpy(),
    })
    return tables


def load_generic(folder: "str | os.PathLike | Location", unknown_items: str = "error") -> Tables:
    """RecBole-style atomic files `<name>.inter` and `<name>.item` (see the module docstring)."""
    folder = Location.of(folder)
    inter_files = folder.glob("*.inter")
    item_files = folder.glob("*.item")
    if len(inter_files) != 1 or len(item_files) != 1:
        raise DataError(f"{folder}: expected exactly one *.inter and one *.item file, found "
                        f"{[p.name for p in inter_files + item_files]}")
    item_header, item_lines = _atomic(item_files[0], required=("item_id",))
    title_column = item_header.get("title")
    category_column = item_header.get("categories")
    extra_columns = [i for name, i in item_header.items() if name not in ("item_id", "title")]
    items = []
    for number, fields in item_lines:
        title = fields[title_column].strip() if title_column is not None else ""
        extra = [fields[i].strip() for i in extra_columns if fields[i].strip()]
        labels = [label.strip() for label in fields[category_column].split("|") if label.strip()] \
            if category_column is not None else []
        items.append((fields[item_header["item_id"]], title, _with_labels(title, extra), labels))
    skips = Counter()
    events = _generic_events_arrow(inter_files[0], skips)
    if events is None:
        events = _generic_events_lines(inter_files[0], skips)
    return _assemble(items, events, str(inter_files[0]), unknown_items, skips)


def _generic_events_lines(path: Location, skips: Counter) -> list[tuple[str, str, int]]:
    """The `.inter` file line by line: every problem is a DataError naming the file and line."""
    inter_header, inter_lines = _atomic(path, required=("user_id", "item_id"))
    ts_column = inter_header.get("timestamp")
    events = []
    for number, fields in inter_lines:
        if ts_column is not None:
            try:
                ts = float(fields[ts_column])
            except ValueError:
                raise DataError(f"{path}:{number}: timestamp is not a number: "
                                f"{fields[ts_column]!r}") from None
            if not np.isfinite(ts) or abs(ts) >= 2.0 ** 63:
                raise DataError(f"{path}:{number}: timestamp {fields[ts_column]!r} is not a finite "
                                "number within 64-bit integers")
            ts = int(ts)
        else:
            ts = number
        events.append((fields[inter_header["user_id"]].strip(), fields[inter_header["item_id"]].strip(), ts))
    kept = [event for event in events if event[0] and event[1]]
    if len(kept) < len(events):
        skips["interactions_with_empty_id"] = len(events) - len(kept)
        log.warning("%s: skipped %d interactions with an empty user or item id", path, len(events) - len(kept))
    unique = list(dict.fromkeys(kept))  # an exact repeat of (user, item, timestamp) is one event
    if len(unique) < len(kept):
        skips["duplicate_interactions"] = len(kept) - len(unique)
        log.warning("%s: skipped %d exact duplicate interactions", path, len(kept) - len(unique))
    return unique


def _generic_events_arrow(path: "str | os.PathLike | Location", skips: Counter) -> pd.DataFrame | None:
    """The `.inter` file read by Arrow's CSV reader (multi-threaded, columnar: a 10M-line log in
    seconds, ids held once per distinct value), giving exactly what `_generic_events_lines` gives,
    or None when anything is off (a header not on line 1, a blank line, a row with another field
    count, bytes that are not UTF-8, a timestamp that is not a finite number within 64-bit integers):
    the line reader then reads the file again and names the file and line of the problem."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv

    path = _require(path)
    with path.open() as handle:
        first = handle.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    names = [column.split(":")[0].strip() for column in first.split("\t")]
    if not first.strip() or "user_id" not in names or "item_id" not in names or len(set(names)) < len(names):
        return None
    columns = [f"column_{i}" for i in range(len(names))]
    try:
        with path.open() as source:
            table = csv.read_csv(source, read_options=csv.ReadOptions(skip_rows=1, column_names=columns),
                                 parse_options=csv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False,
                                                                ignore_empty_lines=False),
                                 convert_options=csv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                                    strings_can_be_null=False,
                                                                    quoted_strings_can_be_null=False))
        user, item = (table[columns[names.index(name)]] for name in ("user_id", "item_id"))
        if "timestamp" in names:
            ts = pc.cast(pc.utf8_trim_whitespace(table[columns[names.index("timestamp")]]), pa.float64()).to_numpy()
            if not (np.isfinite(ts).all() and (np.abs(ts) < 2.0 ** 63).all()):
                return None
            ts = ts.astype(np.int64)  # toward zero, as int(float) does
        else:
            ts = np.arange(2, table.num_rows + 2, dtype=np.int64)  # the line number: line 1 is the header
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return None
    frame = pd.DataFrame({"user_source": _stripped_categories(user), "item_source": _stripped_categories(item),
                          "ts": ts})
    empty = ((frame["user_source"] == "") | (frame["item_source"] == "")).to_numpy()
    if empty.any():
        skips["interactions_with_empty_id"] = int(empty.sum())
        log.warning("%s: skipped %d interactions with an empty user or item id", path, int(empty.sum()))
        frame = frame[~empty]
    repeated = repeated_rows(frame["user_source"].cat.codes.to_numpy(), frame["item_source"].cat.codes.to_numpy(),
                             frame["ts"].to_numpy())
    if repeated.any():  # an exact repeat of (user, item, timestamp) is one event
        skips["duplicate_interactions"] = int(repeated.sum())
        log.warning("%s: skipped %d exact duplicate interactions", path, int(repeated.sum()))
        frame = frame[~repeated]
    return frame.reset_index(drop=True)


def repeated_rows(*columns: np.ndarray) -> np.ndarray:
    """Which rows repeat an earlier row exactly in every column (pandas' `duplicated(keep="first")`):
    a stable sort by the columns puts equal rows next to each other in file order, so a row repeats
    when it equals the row before it. A few arrays of the rows' length instead of the hash table of
    every row that pandas builds (1.2 GB at 11.5M events)."""
    if not len(columns[0]):
        return np.zeros(0, bool)
    order = np.lexsort(columns[::-1])  # by the first column, then the next...; stable
    same = np.ones(len(order) - 1, bool)
    for column in columns:
        ordered = column[order]
        same &= ordered[1:] == ordered[:-1]
    repeated = np.zeros(len(order), bool)
    repeated[order[1:][same]] = True
    return repeated


def _stripped_categories(column) -> pd.Categorical:
    """An Arrow string column as a pandas Categorical of its values after Python's str.strip,
    stripping each distinct value once (ids repeat: users' and items' ids, not every row)."""
    import pyarrow.compute as pc

    raw = pc.dictionary_encode(column).to_pandas()
    codes, stripped = pd.factorize(np.array([value.strip() for value in raw.cat.categories], dtype=object))
    return pd.Categorical.from_codes(codes[raw.cat.codes.to_numpy()], categories=stripped)


def _atomic(path: Location, required: tuple[str, ...]):
    lines = _lines(path)
    try:
        _, header_line = next(lines)
    except StopIteration:
        raise DataError(f"{path}: empty file (expected a header line)") from None
    names = [column.split(":")[0].strip() for column in header_line.split("\t")]
    header = {name: i for i, name in enumerate(names)}
    for name in required:
        if name not in header:
            raise DataError(f"{path}:1: header lacks column '{name}' (has {names})")
    rows = []
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != len(names):
            raise DataError(f"{path}:{number}: expected {len(names)} tab-separated fields, got {len(fields)}")
        rows.append((number, fields))
    return header, rows


def _with_labels(title: str, labels: list[str]) -> str:
    return f"{title} - {', '.join(labels)}" if labels else title


def write_generic(items: pd.DataFrame, interactions: pd.DataFrame, users: pd.DataFrame, folder: Path,
                  chunk_rows: int = 1_000_000) -> None:
    """Canonical tables as the generic format, `<folder>/data.item` and `<folder>/data.inter`
    (source ids; whitespace runs in text, tabs and line breaks included, become one space), written
    `chunk_rows` interactions at a time so a large log never sits in memory as text."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean = lambda text: " ".join(str(text).split())  # noqa: E731
    with open(folder / "data.item", "w", encoding="utf-8") as handle:
        handle.write("item_id:token\ttitle:token_seq\tcategories:token_seq\n")
        handle.writelines(f"{clean(s)}\t{clean(t)}\t{'|'.join(clean(l) for l in labels)}\n"
                          for s, t, labels in zip(items["source_id"], items["title"], items["labels"]))
    user_sources = np.array([clean(s) for s in users.set_index("user_id")["source_id"].reindex(
        np.arange(int(users["user_id"].max()) + 1)).fillna("")], dtype=object)
    item_sources = np.array([clean(s) for s in items["source_id"]], dtype=object)
    with open(folder / "data.inter", "w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for start in range(0, len(interactions), chunk_rows):
            chunk = interactions.iloc[start:start + chunk_rows]
            handle.writelines(f"{u}\t{i}\t{ts}\n" for u, i, ts in
                              zip(user_sources[chunk["user_id"].to_numpy()], item_sources[chunk["item_id"].to_numpy()],
                                  chunk["ts"].to_numpy()))


# --------------------------------------------------------------------------- entry point


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, path: str | None = None,
                 k_core: int = 0, unknown_items: str = "error", ml1m_ratings: str = "timestamped") -> Tables:
    """Load a built-in data set by name (or `generic` from `path`) and apply the k-core filter;
    `Tables.source_files` lists the files read."""
    with _recording_reads() as read:
        tables = _load(name, data_dir, path, unknown_items, ml1m_ratings)
    tables.source_files = sorted(set(read))
    if k_core > 0:
        tables = apply_k_core(tables, k_core)
    if tables.interactions.empty:
        raise DataError(f"dataset {name!r}: no interactions left after loading/filtering")
    return tables


def _load(name: str, data_dir, path, unknown_items: str, ml1m_ratings: str) -> Tables:
    if name == "generic":
        if not path:
            raise DataError("dataset 'generic' needs data.path=<folder with .inter and .item files>")
        tables = load_generic(path, unknown_items)
    else:
        if name not in BUILTIN:
            raise DataError(f"unknown dataset {name!r}; built-in: {sorted(BUILTIN)} or 'generic'")
        folder = resolve_data_dir(data_dir) / BUILTIN[name]
        if not folder.is_dir():
            raise DataError(f"dataset folder not found: {folder}")
        if name == "movielens-100k":
            tables = load_movielens_100k(folder, unknown_items)
        elif name == "movielens-1m":
            tables = load_movielens_1m(folder, ml1m_ratings, unknown_items)
        elif name.startswith("amazon-"):
            tables = load_amazon_5core(folder, unknown_items)
        else:
            tables = load_alkdrec_sessions(folder, unknown_items)
    return tables


def apply_k_core(tables: Tables, k: int) -> Tables:
    """Iteratively drop users and items with fewer than k interactions, then re-densify ids.

    Items without interactions are dropped too. For session data (a session is a "user" here),
    whole sessions are filtered, never items cut out of them (which would change a session's target
    and prefix): a session goes when it is shorter than k or holds an item with fewer than k
    occurrences, until none does."""
    frame = tables.interactions
    while True:
        user_counts = frame["user_id"].map(frame["user_id"].value_counts())
        item_counts = frame["item_id"].map(frame["item_id"].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if tables.sessions is not None:  # a session with any rare item goes whole
            keep = frame["user_id"].map(keep.groupby(frame["user_id"]).all())
        if keep.all():
            break
        frame = frame[keep]
    dropped = len(tables.interactions) - len(frame)
    skips = dict(tables.skips)
    skips["k_core_dropped_interactions"] = dropped
    if tables.sessions is not None:
        skips["k_core_dropped_sessions"] = tables.interactions["user_id"].nunique() - frame["user_id"].nunique()
    log.info("k-core(%d) dropped %d of %d interactions", k, dropped, len(tables.interactions))
    item_ids = np.sort(frame["item_id"].unique())
    user_ids = np.sort(frame["user_id"].unique())
    item_map = pd.Series(np.arange(len(item_ids), dtype=np.int64), index=item_ids)
    user_map = pd.Series(np.arange(len(user_ids), dtype=np.int64), index=user_ids)
    items = tables.items.set_index("item_id").loc[item_ids].reset_index(drop=True)
    items.insert(0, "item_id", np.arange(len(items), dtype=np.int64))
    users = tables.users.set_index("user_id").loc[user_ids].reset_index(drop=True)
    users.insert(0, "user_id", np.arange(len(users), dtype=np.int64))
    interactions = pd.DataFrame({
        "user_id": user_map.loc[frame["user_id"]].to_numpy(),
        "item_id": item_map.loc[frame["item_id"]].to_numpy(),
        "ts": frame["ts"].to_numpy(),
    })
    sessions = None
    if tables.sessions is not None:
        sessions = pd.DataFrame({"session_id": interactions["user_id"], "pos": interactions["ts"],
                                 "item_id": interactions["item_id"]})
    return Tables(items, users, sort_interactions(interactions), sessions, skips, tables.source_files)
