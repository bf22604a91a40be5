from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rec_core.data.datasets import DataError, apply_k_core, load_dataset, load_generic, resolve_data_dir

GENRES = "unknown|0\nAction|1\nComedy|2\n"


def write_ml100k(folder, data_lines, item_lines=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.genre").write_text(GENRES)
    item_lines = item_lines or ["1|Heat (1995)|01-Jan-1995||url|0|1|0", "2|Clueless (1995)|01-Jan-1995||url|0|0|1"]
    (folder / "u.item").write_text("\n".join(item_lines) + "\n", encoding="latin-1")
    (folder / "u.data").write_text("\n".join(data_lines) + "\n")
    return folder.parent


def test_movielens_format_tables(tmp_path):
    root = write_ml100k(tmp_path / "movielens-100k", ["7\t2\t4\t20", "7\t1\t3\t10", "9\t1\t5\t5"])
    tables = load_dataset("movielens-100k", data_dir=root)
    assert tables.items["text"].tolist() == ["Heat (1995) - Action", "Clueless (1995) - Comedy"]
    assert [list(x) for x in tables.items["labels"]] == [["Action"], ["Comedy"]]
    assert tables.items["item_id"].tolist() == [0, 1]
    # user "7" is dense id 0; its interactions are in time order
    assert tables.interactions.values.tolist() == [[0, 0, 10], [0, 1, 20], [1, 0, 5]]
    assert tables.users["source_id"].tolist() == ["7", "9"]


def test_missing_file_is_named(tmp_path):
    root = write_ml100k(tmp_path / "movielens-100k", ["7\t2\t4\t20"])
    (root / "movielens-100k" / "u.data").unlink()
    with pytest.raises(DataError, match=r"missing data file: .*u\.data"):
        load_dataset("movielens-100k", data_dir=root)


def test_malformed_line_names_file_and_line(tmp_path):
    root = write_ml100k(tmp_path / "movielens-100k", ["7\t2\t4\t20", "7\t1\t3", "9\t1\t5\t5"])
    with pytest.raises(DataError, match=r"u\.data:2: expected 4 tab-separated fields"):
        load_dataset("movielens-100k", data_dir=root)


def test_non_integer_timestamp_names_line(tmp_path):
    root = write_ml100k(tmp_path / "movielens-100k", ["7\t2\t4\t20", "9\t1\t5\tyesterday"])
    with pytest.raises(DataError, match=r"u\.data:2: timestamp is not an integer"):
        load_dataset("movielens-100k", data_dir=root)


def test_unknown_item_in_builtin_data_is_an_error(tmp_path):
    root = write_ml100k(tmp_path / "movielens-100k", ["7\t2\t4\t20", "7\t99\t3\t10"])
    with pytest.raises(DataError, match=r"not in the item file, e\.g\. \['99'\]"):
        load_dataset("movielens-100k", data_dir=root)
    tables = load_dataset("movielens-100k", data_dir=root, unknown_items="skip")  # what the error advises
    assert tables.skips == {"interactions_with_unknown_item": 1} and len(tables.interactions) == 1


def write_generic(folder, inter_rows, item_rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shop.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                                       + "".join(r + "\n" for r in inter_rows))
    (folder / "shop.item").write_text("item_id:token\ttitle:token_seq\tbrand:token\n"
                                      + "".join(r + "\n" for r in item_rows))
    return folder


ITEMS = ["a\tRed shoe\tAcme", "b\tBlue hat\t", "c\tGreen sock\tSox"]


def test_generic_format(tmp_path):
    folder = write_generic(tmp_path, ["u1\tb\t3", "u1\ta\t1.5", "u2\tc\t2"], ITEMS)
    tables = load_generic(folder)
    assert tables.items["text"].tolist() == ["Red shoe - Acme", "Blue hat", "Green sock - Sox"]
    assert tables.interactions.values.tolist() == [[0, 0, 1], [0, 1, 3], [1, 2, 2]]


def test_generic_unknown_item_error_or_counted_skip(tmp_path):
    folder = write_generic(tmp_path, ["u1\tb\t3", "u1\tzz\t4", "u2\tc\t2"], ITEMS)
    with pytest.raises(DataError, match="zz"):
        load_generic(folder)
    tables = load_generic(folder, unknown_items="skip")
    assert tables.skips == {"interactions_with_unknown_item": 1}
    assert len(tables.interactions) == 2


def test_generic_empty_ids_and_exact_duplicates_are_counted_skips(tmp_path):
    folder = write_generic(tmp_path, ["u1\tb\t3", "u1\tb\t3", " \ta\t1", "u2\t\t2", "u2\tc\t2", "u2\tc\t5"], ITEMS)
    tables = load_generic(folder)
    assert tables.skips == {"interactions_with_empty_id": 2, "duplicate_interactions": 1}
    assert tables.interactions.values.tolist() == [[0, 1, 3], [1, 2, 2], [1, 2, 5]]  # a repeat at another time stays


def test_generic_malformed_and_missing_columns(tmp_path):
    folder = write_generic(tmp_path, ["u1\tb\t3", "u1\ta"], ITEMS)
    with pytest.raises(DataError, match=r"shop\.inter:3: expected 3 tab-separated fields, got 2"):
        load_generic(folder)
    (folder / "shop.inter").write_text("user:token\titem_id:token\nu1\ta\n")
    with pytest.raises(DataError, match=r"shop\.inter:1: header lacks column 'user_id'"):
        load_generic(folder)


def test_sequence_format_user_without_interactions(tmp_path):
    folder = tmp_path / "amazon-beauty-5core-p5"
    folder.mkdir()
    (folder / "items.jsonl").write_text('{"item_id": 0, "title": "Soap", "categories": [["Beauty", "Bath"]]}\n'
                                        '{"item_id": 1, "title": "Gel", "categories": []}\n')
    (folder / "sequential_data.txt").write_text("1 0 1\n2\n")
    with pytest.raises(DataError, match=r"sequential_data\.txt:2: user 2 has no interactions"):
        load_dataset("amazon-beauty", data_dir=tmp_path)
    (folder / "items.jsonl").write_text('{"item_id": 0, "title": "Soap"}\n{"item_id": 1, "title"\n')
    with pytest.raises(DataError, match=r"items\.jsonl:2: not an item record"):
        load_dataset("amazon-beauty", data_dir=tmp_path)


def test_session_format_counts_skips(tmp_path):
    folder = tmp_path / "sessions-hetrec2011-ml-alkdrec"
    folder.mkdir()
    (folder / "items.csv").write_text('itemID,title\n1,"Toy story"\n2,Heat\n')
    (folder / "sessions.tsv").write_text("session_id\tprefix\tlabel\n0\t1 2\t3\n1\t\t2\n2\t2\t1\n")
    tables = load_dataset("sessions-hetrec-ml", data_dir=tmp_path)
    assert tables.skips == {"sessions_without_prefix": 1, "items_without_title": 1}
    assert tables.sessions.groupby("session_id").size().tolist() == [3, 2]
    assert tables.items.set_index("source_id").loc["3", "title"] == ""


def test_k_core_filter_is_iterative():
    from rec_core.data.datasets import Tables
    import pandas as pd

    # item 2 has one interaction; removing it leaves user 1 with one interaction, which then goes too
    inter = pd.DataFrame({"user_id": [0, 0, 1, 1, 2, 2], "item_id": [0, 1, 0, 2, 0, 1], "ts": range(6)})
    items = pd.DataFrame({"item_id": [0, 1, 2], "source_id": ["x", "y", "z"], "title": "", "text": "", "labels": [[]] * 3})
    users = pd.DataFrame({"user_id": [0, 1, 2], "source_id": ["a", "b", "c"]})
    out = apply_k_core(Tables(items, users, inter), 2)
    assert out.users["source_id"].tolist() == ["a", "c"]
    assert out.items["source_id"].tolist() == ["x", "y"]
    assert out.skips["k_core_dropped_interactions"] == 2


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("REC_DATA_DIR", str(tmp_path))
    assert Path(resolve_data_dir()) == tmp_path
    assert Path(resolve_data_dir(tmp_path / "..")) == tmp_path.parent
    monkeypatch.setenv("REC_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"\$REC_DATA_DIR"):
        resolve_data_dir()


@pytest.mark.parametrize("name,items,interactions", [
    ("movielens-100k", 1682, 100000),
    ("movielens-1m", 3883, 487650),
    ("amazon-beauty", 12101, 198502),
    ("sessions-hetrec-ml", 8475, 112034),
])
def test_builtin_datasets_load(data_dir, name, items, interactions):
    tables = load_dataset(name, data_dir=data_dir)
    assert len(tables.items) == items
    assert len(tables.interactions) == interactions
    assert tables.interactions["item_id"].between(0, items - 1).all()
    assert (tables.items["item_id"].to_numpy() == np.arange(items)).all()
    assert tables.items["text"].str.len().gt(0).all()


def test_k_core_on_sessions_drops_whole_sessions():
    from rec_core.data.datasets import Tables
    import pandas as pd

    # sessions 0-2 use items 0 and 1 (3 times each); session 3 = [0, 1, 9]: item 9 is rare. A
    # per-interaction filter would trim session 3 to [0, 1] and so change its target from 9 to 1.
    inter = pd.DataFrame({"user_id": [0, 0, 1, 1, 2, 2, 3, 3, 3], "item_id": [0, 1, 0, 1, 0, 1, 0, 1, 9],
                          "ts": [0, 1, 0, 1, 0, 1, 0, 1, 2]})
    items = pd.DataFrame({"item_id": [0, 1, 9], "source_id": ["x", "y", "z"], "title": "", "text": "",
                          "labels": [[]] * 3})
    users = pd.DataFrame({"user_id": [0, 1, 2, 3], "source_id": ["s0", "s1", "s2", "s3"]})
    sessions = pd.DataFrame({"session_id": inter["user_id"], "pos": inter["ts"], "item_id": inter["item_id"]})
    out = apply_k_core(Tables(items, users, inter, sessions), 2)
    assert out.users["source_id"].tolist() == ["s0", "s1", "s2"]
    assert out.sessions.groupby("session_id").size().tolist() == [2, 2, 2]
    assert out.skips["k_core_dropped_sessions"] == 1 and out.skips["k_core_dropped_interactions"] == 3


def test_invalid_utf8_names_the_file_and_line(tmp_path):
    folder = write_generic(tmp_path, ["u1\tb\t3", "u1\ta\t1.5"], ITEMS)
    with open(folder / "shop.item", "ab") as handle:
        handle.write(b"d\tCaf\xe9 au lait\tBrew\n")  # latin-1 bytes in a UTF-8 file
    with pytest.raises(DataError, match=r"shop\.item:5: not valid utf-8 text .*re-encode the file as utf-8"):
        load_generic(folder)


@pytest.mark.parametrize("stamp", ["inf", "nan", "1e30", "-9.3e18"])
def test_a_timestamp_beyond_64_bit_integers_names_the_line(tmp_path, stamp):
    folder = write_generic(tmp_path, ["u1\tb\t3", f"u1\ta\t{stamp}"], ITEMS)
    with pytest.raises(DataError, match=rf"shop\.inter:3: timestamp '{stamp}' is not a finite number"):
        load_generic(folder)


def test_a_huge_integer_timestamp_in_builtin_data_names_the_line(tmp_path):
    root = write_ml100k(tmp_path / "movielens-100k", ["7\t2\t4\t20", "9\t1\t5\t99999999999999999999999"])
    with pytest.raises(DataError, match=r"u\.data:2: timestamp '9+' is out of range"):
        load_dataset("movielens-100k", data_dir=root)


def test_a_gap_in_the_genre_indices_is_named(tmp_path):
    root = write_ml100k(tmp_path / "movielens-100k", ["7\t2\t4\t20"])
    (root / "movielens-100k" / "u.genre").write_text("unknown|0\nAction|1\nComedy|3\n")
    with pytest.raises(DataError, match=r"u\.genre: genre indices must be 0\.\.2, .* \(missing \[2\]\)"):
        load_dataset("movielens-100k", data_dir=root)


def ingest_generic(tmp_path, inter_rows, *overrides):
    from jobs.ingest import ingest
    from rec_core.run.config import load_config
    from rec_core.run.directory import Run

    folder = write_generic(tmp_path / "shop", inter_rows, ITEMS)
    run = Run(load_config(None, [f"output_dir={tmp_path / 'runs'}", "run_id=r", "data.dataset=generic",
                                 f"data.path={folder}", *overrides]))
    ingest(run)
    return run


def test_a_catalogue_smaller_than_the_lists_is_named(tmp_path):
    with pytest.raises(DataError, match=r"generic: the catalogue has 3 items, fewer than the 50 that eval\.top_k=50 "
                                        r"/ eval\.ks=\[10, 20, 50\] rank; lower them"):
        ingest_generic(tmp_path, ["u1\tb\t3", "u1\ta\t1.5"])


def test_data_with_no_user_to_evaluate_is_named(tmp_path):
    small = ["eval.top_k=2", "eval.ks=[1,2]"]
    with pytest.raises(DataError, match=r"generic: 0 users can be split \(at least 2 interactions each; 2 skipped "
                                        r"as shorter\), which leaves the train and valid and test split\(s\) empty"):
        ingest_generic(tmp_path, ["u1\tb\t3", "u2\ta\t1.5"], *small)
    with pytest.raises(DataError, match=r"1 users can be split .* leaves the valid and test split\(s\) empty"):
        ingest_generic(tmp_path / "2", ["u1\tb\t3", "u1\ta\t1.5"], *small)


HEADER = b"user_id:token\titem_id:token\ttimestamp:float\n"
FAST_READS = {
    "floats, negatives, padding, repeats, empty ids": HEADER + b"u1\tb\t3\nu1\ta\t1.5\n u2 \t c \t 7 \nu2\tc\t-3\n"
                                                      b"u1\tb\t3\n\ta\t4\nu3\t\t5\nu\xc3\xbc\ta\t2.9\n",
    "no timestamp, another column": b"user_id:token\trating:float\titem_id:token\nu1\t5\tb\nu2\t4\ta\nu1\t3\ta\n",
    "CRLF line ends, no final line end": HEADER.replace(b"\n", b"\r\n") + b"u1\tb\t3\r\nu2\ta\t1",
}
LINE_READS = {  # each sends the file to the line reader, which reads it or names the line
    "a blank line": HEADER + b"u1\tb\t3\n\nu2\ta\t1\n",
    "a missing field": HEADER + b"u1\tb\t3\nu2\ta\n",
    "latin-1 bytes": HEADER + b"u1\tb\t3\nu\xe92\ta\t1\n",
    "an underscore in a number": HEADER + b"u1\tb\t1_000\n",
    "an infinite timestamp": HEADER + b"u1\tb\tinf\n",
}


@pytest.mark.parametrize("case", sorted(FAST_READS))
def test_the_arrow_reader_gives_exactly_the_line_readers_events(tmp_path, case):
    from collections import Counter

    from rec_core.data.datasets import _generic_events_arrow, _generic_events_lines

    path = tmp_path / "shop.inter"
    path.write_bytes(FAST_READS[case])
    fast_skips, line_skips = Counter(), Counter()
    fast = _generic_events_arrow(path, fast_skips)
    assert fast is not None
    assert list(zip(fast["user_source"].astype(str), fast["item_source"].astype(str), fast["ts"].tolist())) \
        == _generic_events_lines(path, line_skips)
    assert fast_skips == line_skips


@pytest.mark.parametrize("case", sorted(LINE_READS))
def test_what_the_arrow_reader_cannot_vouch_for_goes_to_the_line_reader(tmp_path, case):
    from collections import Counter

    from rec_core.data.datasets import _generic_events_arrow

    path = tmp_path / "shop.inter"
    path.write_bytes(LINE_READS[case])
    assert _generic_events_arrow(path, Counter()) is None


def test_generic_tables_are_the_same_through_either_reader(tmp_path, monkeypatch):
    from rec_core.data import datasets
    from rec_core.data.synthetic import synthetic_tables

    items, users, interactions = synthetic_tables(users=400, seed=5)
    datasets.write_generic(items, interactions, users, tmp_path)
    fast = load_generic(tmp_path)
    monkeypatch.setattr(datasets, "_generic_events_arrow", lambda path, skips: None)
    slow = load_generic(tmp_path)
    for name in ("items", "users", "interactions"):
        pd.testing.assert_frame_equal(getattr(fast, name), getattr(slow, name))
    assert fast.skips == slow.skips


def test_an_interaction_file_with_only_its_header_is_named(tmp_path):
    folder = write_generic(tmp_path, [], ITEMS)
    with pytest.raises(DataError, match="no interactions left"):
        load_dataset("generic", path=str(folder))


def test_repeated_rows_are_pandas_duplicated_keep_first():
    """The generic loader's duplicate check (a stable sort, no hash table of every row) marks the rows
    pandas' duplicated() marks: every later copy of a row, never its first."""
    from rec_core.data.datasets import repeated_rows

    rng = np.random.default_rng(0)
    for rows in (0, 1, 7, 1000, 100_000):
        users, items, times = rng.integers(0, 30, rows), rng.integers(0, 20, rows), rng.integers(0, 5, rows)
        expected = pd.DataFrame({"u": users, "i": items, "t": times}).duplicated().to_numpy()
        assert (repeated_rows(users, items, times) == expected).all()
    assert repeated_rows(np.array([3, 3, 3]), np.array([1, 1, 1]), np.array([9, 9, 9])).tolist() == [False, True, True]
