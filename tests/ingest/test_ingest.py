"""Bulk ingest: reads after an ingest equal a ground truth computed independently with pyarrow
(sort by user, ts, then input position), across shuffled rows, timestamp ties, many row groups,
several files, several spill partitions, string columns, string user ids, CSV and JSON lines,
and ingest into a store that already holds events. Plus the ledger and bad-data refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from seqvault import DuplicateIngest, Schema, SeqVault, ValidationError, sample
from seqvault.ingest import ingest, ledger_entries

NOW_MS = 1_790_000_000_000


def make_table(rng: np.random.Generator, n: int, users: np.ndarray) -> pa.Table:
    """Rows in random order, few distinct timestamps per user (many ties)."""
    return sample.events_table(rng, n, users=users, now_ms=NOW_MS,
                               distinct_ts=40)  # 40 distinct values: ties everywhere


def ground_truth(tables: list[pa.Table], user_col: str = "user_id") -> dict:
    """user -> columns, by pyarrow: concat in input order, sort by (user, ts, position)."""
    t = pa.concat_tables(tables)
    t = t.append_column("_pos", pa.array(np.arange(t.num_rows)))
    t = t.sort_by([(user_col, "ascending"), ("ts", "ascending"), ("_pos", "ascending")])
    out: dict = {}
    users = t.column(user_col).to_pylist()
    cols = {c: t.column(c).to_pylist() for c in t.column_names if c not in (user_col, "_pos")}
    start = 0
    for i in range(1, len(users) + 1):
        if i == len(users) or users[i] != users[start]:
            out[users[start]] = {c: v[start:i] for c, v in cols.items()}
            start = i
    return out


def assert_matches(vault: SeqVault, truth: dict) -> None:
    assert vault.stats()["users"] == len(truth)
    for user, cols in truth.items():
        seq = vault.read(user)
        assert len(seq) == len(cols["ts"]), user
        for c, values in cols.items():
            assert seq[c].tolist() == values, (user, c)


def write_parquet(table: pa.Table, path: Path, row_group_size: int) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_ingest_matches_ground_truth_across_files_row_groups_and_partitions(tmp_path,
                                                                             monkeypatch):
    import seqvault.ingest.core as core

    monkeypatch.setattr(core, "FAST_CHUNK_EVENTS", 1_000)  # many fast-path chunks
    rng = np.random.default_rng(1)
    users = rng.choice(1 << 50, size=300, replace=False).astype(np.int64) - (1 << 49)
    tables = [make_table(rng, n, users) for n in (20_000, 7_000, 13_000)]
    # one heavy user (several lifetime segments: the BulkWriter.add path) among small ones
    tables.append(make_table(rng, 6_000, users[:1]).set_column(
        1, "ts", pa.array(NOW_MS - np.arange(6_000)[::-1] * 10, pa.int64())))
    files = [write_parquet(t, tmp_path / f"part{i}.parquet", 1_500)
             for i, t in enumerate(tables)]
    assert len(files) == 4
    assert pq.ParquetFile(files[0]).num_row_groups > 10
    with SeqVault.open(tmp_path / "store", schema=sample.behavior_schema()) as v:
        s = ingest(v, files, rows_per_partition=10_000, batch_rows=4_000)
        assert s.partitions == 5
        assert s.events == 46_000 and s.users == len(set(pa.concat_tables(tables)
                                                          .column("user_id").to_pylist()))
        assert not list(tmp_path.joinpath("store").glob("tmp-ingest-*"))
        assert_matches(v, ground_truth(tables))
    with SeqVault.open(tmp_path / "store", read_only=True) as r:  # after reopen, too
        assert_matches(r, ground_truth(tables))


def test_directory_input_is_read_in_name_order(tmp_path):
    rng = np.random.default_rng(2)
    users = np.arange(1, 40, dtype=np.int64)
    tables = [make_table(rng, 3_000, users) for _ in range(3)]
    d = tmp_path / "logs"
    d.mkdir()
    for i, t in enumerate(tables):
        write_parquet(t, d / f"day-{i:02d}.parquet", 1_000)
    (d / "_SUCCESS").write_text("")
    with SeqVault.open(tmp_path / "store", schema=sample.behavior_schema()) as v:
        ingest(v, [d])
        assert_matches(v, ground_truth(tables))


def test_ingest_merges_with_stored_events_which_count_as_older_arrivals(tmp_path):
    rng = np.random.default_rng(3)
    users = np.arange(1, 30, dtype=np.int64)
    first, second = make_table(rng, 4_000, users), make_table(rng, 2_000, users)
    new = make_table(rng, 5_000, np.arange(10, 50, dtype=np.int64))
    with SeqVault.open(tmp_path / "store", schema=sample.behavior_schema()) as v:
        v.append_batch(first)
        v.flush()  # sealed real-time segments
        v.append_batch(second)  # still in the memtable (and the log)
        ingest(v, [write_parquet(new, tmp_path / "new.parquet", 700)])
        assert_matches(v, ground_truth([first, second, new]))
    with SeqVault.open(tmp_path / "store") as v:
        assert_matches(v, ground_truth([first, second, new]))


def test_second_ingest_of_same_file_is_refused_and_force_loads_it_again(tmp_path):
    rng = np.random.default_rng(4)
    t = make_table(rng, 2_000, np.arange(1, 20, dtype=np.int64))
    f = write_parquet(t, tmp_path / "a.parquet", 500)
    copy = tmp_path / "copy-of-a.parquet"
    copy.write_bytes(f.read_bytes())
    with SeqVault.open(tmp_path / "store", schema=sample.behavior_schema()) as v:
        ingest(v, [f])
        before = v.stats()
        with pytest.raises(DuplicateIngest, match="already ingested"):
            ingest(v, [copy])  # same content under another name
        assert v.stats()["events"] == before["events"]
        assert v.stats()["commit_seq"] == before["commit_seq"]
        entries = ledger_entries(v)
        assert len(entries) == 1 and entries[0]["rows"] == 2_000
        ingest(v, [copy], force=True)
        assert v.stats()["events"] == 4_000
        assert ledger_entries(v)[0]["times"] == 2
        assert_matches(v, ground_truth([t, t]))


def test_same_content_twice_in_one_call_is_refused(tmp_path):
    rng = np.random.default_rng(5)
    f = write_parquet(make_table(rng, 100, np.arange(3, dtype=np.int64)), tmp_path / "a.parquet",
                      50)
    g = tmp_path / "b.parquet"
    g.write_bytes(f.read_bytes())
    with SeqVault.open(tmp_path / "store", schema=sample.behavior_schema()) as v:
        with pytest.raises(DuplicateIngest, match="same content"):
            ingest(v, [f, g])
        assert v.stats()["events"] == 0 and ledger_entries(v) == []


def _assert_untouched(store: Path, v: SeqVault) -> None:
    assert v.stats()["events"] == 0
    assert ledger_entries(v) == []
    assert not list(store.glob("tmp-ingest-*"))
    assert not [p for p in (store / "data").iterdir() if p.stat().st_size > 0]


@pytest.mark.parametrize("case", ["wrong_type", "null_user", "null_ts", "missing", "bad_ts",
                                  "out_of_range"])
def test_bad_data_names_file_row_group_column_and_value_and_publishes_nothing(tmp_path, case):
    rng = np.random.default_rng(6)
    good = make_table(rng, 3_000, np.arange(1, 50, dtype=np.int64))
    f_ok = write_parquet(good, tmp_path / "ok.parquet", 1_000)
    t = make_table(rng, 3_000, np.arange(1, 50, dtype=np.int64))
    bad_row = 2_345  # row group 2, row 345
    expect_col, expect_val = {
        "wrong_type": ("category", "is a str"), "null_user": ("user_id", "None"),
        "null_ts": ("ts", "None"), "missing": ("dwell_ms", None), "bad_ts": ("ts", "-5"),
        "out_of_range": ("category", "70000"),
    }[case]
    if case == "missing":
        t = t.drop_columns(["dwell_ms"])
    elif case == "wrong_type":
        # A string column where the schema has uint16: refused at its first row.
        vals = [str(x) for x in t.column("category").to_pylist()]
        t = t.set_column(t.schema.get_field_index("category"), "category", pa.array(vals))
    elif case == "out_of_range":
        vals = pa.array(t.column("category").to_pylist(), pa.int64()).to_pylist()
        vals[bad_row] = 70_000
        t = t.set_column(t.schema.get_field_index("category"), "category",
                         pa.array(vals, pa.int64()))
    else:
        col = {"null_user": "user_id", "null_ts": "ts", "bad_ts": "ts"}[case]
        vals = t.column(col).to_pylist()
        vals[bad_row] = None if case != "bad_ts" else -5
        t = t.set_column(t.schema.get_field_index(col), col, pa.array(vals, pa.int64()))
    f_bad = write_parquet(t, tmp_path / "bad.parquet", 1_000)
    store = tmp_path / "store"
    with SeqVault.open(store, schema=sample.behavior_schema()) as v:
        with pytest.raises(ValidationError) as info:
            ingest(v, [f_ok, f_bad], rows_per_partition=10_000)
        msg = str(info.value)
        assert "bad.parquet" in msg and repr(expect_col) in msg, msg
        assert info.value.column == expect_col
        if expect_val is not None:
            where = "row group 0, row 0" if case == "wrong_type" else "row group 2, row 345"
            assert where in msg, msg
            assert expect_val in msg, msg
        _assert_untouched(store, v)
        ingest(v, [f_ok])  # the store still works, and the good file was not consumed
        assert v.stats()["events"] == 3_000


def test_string_user_ids_and_csv_and_json_lines(tmp_path):
    rng = np.random.default_rng(7)
    n = 3_000
    t = make_table(rng, n, np.arange(1, 60, dtype=np.int64))
    t = t.set_column(0, "user_id", pc.cast(pc.binary_join_element_wise(
        pa.array(["u"] * n), pc.cast(t.column("user_id"), pa.string()), ""), pa.string()))
    a, b = t.slice(0, 1_000), t.slice(1_000)
    csv_path = tmp_path / "a.csv"
    pacsv.write_csv(a, csv_path)
    jl = tmp_path / "b.jsonl"
    with open(jl, "w") as fh:
        for row in b.to_pylist():
            fh.write(json.dumps(row) + "\n")
    schema = Schema.from_dict({**sample.behavior_schema().to_dict(), "version": 1,
                               "user": {"column": "user_id", "type": "string"}})
    with SeqVault.open(tmp_path / "store", schema=schema) as v:
        s = ingest(v, [csv_path, jl], rows_per_partition=1_000, spill_compression="lz4")
        assert s.partitions > 1 and s.spill_compression == "lz4"  # sizes estimated from bytes
        assert s.events == n
        assert_matches(v, ground_truth([a, b]))


def test_empty_file_is_recorded_in_the_ledger(tmp_path):
    t = make_table(np.random.default_rng(8), 0, np.arange(1, 2, dtype=np.int64))
    f = write_parquet(t, tmp_path / "empty.parquet", 100)
    with SeqVault.open(tmp_path / "store", schema=sample.behavior_schema()) as v:
        s = ingest(v, [f])
        assert s.events == 0 and len(ledger_entries(v)) == 1
        with pytest.raises(DuplicateIngest):
            ingest(v, [f])
