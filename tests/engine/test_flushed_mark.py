"""The background flush's `flushed` mark (store format 5; docs/format/manifest.md, "Commit
protocol (a background flush)"; docs/format/wal.md, rule R4): one `meta` value instead of a
"sealed through" record per user, records up to it skipped on replay without being decoded,
readers rebuilding their memtable from it, and format-4 stores opening as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqvault import Schema, SeqVault, recovery
from seqvault.manifest import STORE_FORMAT_VERSION, Edit

from .test_background_flush import SCHEMA, wait_flushed

MEMTABLE = 100


def open_store(path: Path, **kw) -> SeqVault:
    settings = dict(memtable_events=MEMTABLE, tail_events=1_000, durability="batch")
    settings.update(kw)
    return SeqVault.open(path, schema=Schema.from_dict(SCHEMA), **settings)


def put(v: SeqVault, oracle: dict[int, list[tuple[int, str]]], start: int, n: int) -> None:
    """`n` one-event appends (one log record each) over 7 users; every event has a string
    never seen before, so each record assigns a new dictionary code."""
    for i in range(start, start + n):
        u = i % 7
        v.append(u, {"ts": [1_000 + i], "item": [i], "act": [f"s{i}"]})
        oracle.setdefault(u, []).append((i, f"s{i}"))


def check(v: SeqVault, oracle: dict[int, list[tuple[int, str]]]) -> None:
    for u, want in oracle.items():
        got = v.read(u)
        assert list(zip(got.columns["item"].tolist(), got.columns["act"].tolist())) == want, u


def lmdb_state(v: SeqVault) -> tuple[int, list | None]:
    """(number of `sealed` records, the `flushed` meta value) as LMDB holds them."""
    m = v.manifest.meta
    with m.begin() as txn:
        return (sum(1 for _ in m.items(txn, "sealed")), m.get_meta(txn, "flushed"))


def test_R4_M8_a_background_flush_commits_one_flushed_mark_and_no_record_per_user(tmp_path):
    oracle: dict = {}
    v = open_store(tmp_path / "s")
    put(v, oracle, 0, MEMTABLE - 1)
    end = v.wal.size  # the log's end when the next append fills the memtable
    put(v, oracle, MEMTABLE - 1, 1)
    through = v.wal.size
    assert through > end
    wait_flushed(v)
    assert v.stats()["flushes"] == 1
    assert lmdb_state(v) == (0, [v.wal_id, through])
    assert v.manifest.flushed == through
    check(v, oracle)
    v.close(flush=False)


def test_R4_records_up_to_the_mark_are_not_decoded_on_reopen(tmp_path, monkeypatch):
    oracle: dict = {}
    v = open_store(tmp_path / "s")
    put(v, oracle, 0, MEMTABLE)
    wait_flushed(v)
    put(v, oracle, MEMTABLE, 30)
    v.close(flush=False)
    decoded: list[int] = []
    real = recovery.wal_mod.decode_append

    def counting(schema, payload):
        decoded.append(1)
        return real(schema, payload)

    monkeypatch.setattr(recovery.wal_mod, "decode_append", counting)
    v = SeqVault.open(tmp_path / "s")
    assert len(decoded) == 30  # only the records after the mark
    assert v.stats()["recovered_events"] == 30
    check(v, oracle)  # and the codes of the skipped records' strings are the writer's
    assert v.verify()["ok"]
    v.close(flush=False)
    decoded.clear()
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert len(decoded) == 30
        check(r, oracle)


def test_R2_R4_a_reader_behind_the_mark_reloads_the_codes_and_rebuilds_from_it(tmp_path):
    oracle: dict = {}
    v = open_store(tmp_path / "s")
    put(v, oracle, 0, 20)
    v.sync()
    with SeqVault.open(tmp_path / "s", read_only=True, refresh_interval=3600) as r:
        check(r, oracle)  # the reader has replayed 20 records
        # 80 more records, each with a new string, that the reader never replays: the flush
        # covers them, and its commit publishes their codes.
        put(v, oracle, 20, MEMTABLE - 20)
        wait_flushed(v)
        put(v, oracle, MEMTABLE, 25)  # new strings after the mark: their codes follow those
        v.sync()
        r.refresh()
        assert r.manifest.flushed == v.manifest.flushed > 0
        assert r.stats()["memtable_events"] == v.stats()["memtable_events"] == 25
        check(r, oracle)
        put(v, oracle, MEMTABLE + 25, 5)  # and a plain refresh after it
        v.sync()
        r.refresh()
        check(r, oracle)
    v.close()


def test_R4_a_mark_of_an_older_log_is_ignored(tmp_path):
    oracle: dict = {}
    v = open_store(tmp_path / "s")
    put(v, oracle, 0, MEMTABLE)
    wait_flushed(v)
    old_id, mark = v.wal_id, v.manifest.flushed
    v.flush(rotate=True)  # the mark names the old log now
    assert v.wal_id != old_id and v.manifest.flushed == -1
    put(v, oracle, MEMTABLE, 30)  # the new log's records end below the old mark
    assert v.wal.size < mark
    v.close(flush=False)
    with SeqVault.open(tmp_path / "s") as v:
        assert lmdb_state(v)[1] == [old_id, mark]
        assert v.manifest.flushed == -1
        assert v.stats()["recovered_events"] == 30
        check(v, oracle)


def test_a_flushed_mark_can_not_come_with_a_rotation(tmp_path):
    v = open_store(tmp_path / "s")
    seq = v.manifest.seq
    with v.lock, pytest.raises(ValueError, match="flushed"):
        v.manifest.commit(Edit(flushed=10, wal_id=v.wal_id + 1))
    assert v.manifest.seq == seq and lmdb_state(v) == (0, None)
    v.close()


def test_a_format_4_store_opens_as_it_is_and_the_next_writer_marks_it_5(tmp_path):
    oracle: dict = {}
    v = open_store(tmp_path / "s", flush_worker="caller")  # as format-4 code wrote stores
    put(v, oracle, 0, MEMTABLE + 30)
    v.close(flush=False)
    from seqvault.meta import Meta

    m = Meta(tmp_path / "s" / "meta", read_only=False)
    with m.begin(write=True) as txn:
        m.set_meta(txn, "format_version", 4)
    m.close()
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert r.manifest.format_version == 4 and r.manifest.flushed == -1
        check(r, oracle)
    with SeqVault.open(tmp_path / "s") as v:
        assert v.manifest.format_version == STORE_FORMAT_VERSION == 5
        check(v, oracle)
