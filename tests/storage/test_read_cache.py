"""The decoded-segment cache (seqvault/segcache.py; docs/design/realtime.md, "Decoded-segment
cache"): reads with it give exactly the answers reads without it give, on both decoders;
callers get copies; it stays within its bytes; a deleted file's entries go; damage is never
served (a hit holds only bytes that passed their checksums, and a cold reader finds the damage)."""

from __future__ import annotations

import numpy as np
import pytest

from seqvault import CorruptionError, Schema, SeqVault
from seqvault.segcache import SegmentCache
from tests.engine.test_short_reads import SCHEMA, _store


def _reads(v: SeqVault) -> dict:
    out = {}
    for strings in ("decode", "codes"):
        for last in (None, 1, 5, 40, 41, 100, 10_000):
            for cols in (None, ["act", "ts"], ["dwell"], ["item"]):
                for before in (None, 1_200):
                    seq = v.read(1, last=last, columns=cols, strings=strings, before=before)
                    out[strings, last, str(cols), before] = {k: seq[k].copy() for k in seq}
    return out


@pytest.mark.parametrize("late", [False, True])
def test_cached_reads_equal_uncached_reads(tmp_path, decoder, late):
    v = _store(tmp_path, late)
    path = v.path
    try:
        v.flush()  # every event in segments: the cache is on every source
        first = _reads(v)   # fills the cache
        second = _reads(v)  # served from it
        stats = v.stats()
        assert stats["read_cache_hits"] > 0 and stats["read_cache_segments"] > 0
    finally:
        v.close()
    with SeqVault.open(path, read_only=True, read_cache_bytes=0) as r:
        assert r.stats()["read_cache_segments"] == 0
        want = _reads(r)
        assert r.stats()["read_cache_hits"] == 0
    assert first.keys() == want.keys()
    for k, cols in want.items():
        for got in (first[k], second[k]):
            assert list(got) == list(cols), k
            for name, a in cols.items():
                np.testing.assert_array_equal(got[name], a, err_msg=str(k))
                assert got[name].dtype == a.dtype


def test_callers_get_copies_not_the_cached_arrays(tmp_path):
    v = _store(tmp_path, late=False)
    try:
        v.flush()
        v.read(1, last=10)  # fills the cache
        a = v.read(1, last=10)  # a hit
        want = {k: a[k].copy() for k in a}
        for k in a:
            a[k][:] = 0 if a[k].dtype.kind != "U" else ""
        b = v.read(1, last=10)
        for k in want:
            np.testing.assert_array_equal(b[k], want[k])
    finally:
        v.close()


def test_the_cache_stays_within_its_bytes(tmp_path):
    cap = 40_000
    with SeqVault.open(tmp_path / "s", schema=Schema.from_dict(SCHEMA), read_cache_bytes=cap,
                       tail_events=50, durability="none") as v:
        rng = np.random.default_rng(3)
        for user in range(60):
            n = 300
            v.append(user, {"ts": np.arange(n, dtype=np.int64) + 1_000 * user,
                             "item": rng.integers(0, 10**6, n), "act": ["a"] * n})
        v.flush()
        for user in range(60):
            assert len(v.read(user, last=300)) == 300
            assert v.stats()["read_cache_bytes"] <= cap
        assert v.stats()["read_cache_segments"] > 0


def test_lru_completes_entries_column_by_column_and_evicts_oldest():
    c = SegmentCache(3_000)
    ts = np.arange(100, dtype=np.int64)
    c.put(1, 0, 10, b"k", 100, ts, {5: np.ones(100, np.int64)})
    c.put(1, 0, 10, b"k", 100, ts, {6: None})
    e = c.get(1, 0, 10)
    assert e is not None and set(e.cols) == {5, 6} and e.cols[6] is None
    c.put(2, 0, 10, b"k", 100, ts, {5: np.ones(100, np.int64)})
    c.put(3, 0, 10, b"k", 100, ts, {})  # over 3,000 bytes: the least recently used goes
    assert c.get(1, 0, 10) is None
    assert c.get(3, 0, 10) is not None
    c.drop_file(3)
    assert c.get(3, 0, 10) is None
    assert c.stats()["read_cache_bytes"] <= 3_000


def test_damage_after_caching_is_never_served_and_a_cold_reader_reports_it(tmp_path):
    v = _store(tmp_path, late=False)
    path = v.path
    try:
        v.flush()
        before = v.read(1)
        want = {k: before[k].copy() for k in before}
        # Flip one byte in the middle of every segment file (payload damage).
        for f in (path / "data").iterdir():
            raw = bytearray(f.read_bytes())
            if raw:
                raw[len(raw) // 2] ^= 0xFF
                f.write_bytes(bytes(raw))
        again = v.read(1)  # served from verified entries: the events as written
        for k in want:
            np.testing.assert_array_equal(again[k], want[k])
        with SeqVault.open(path, read_only=True) as r:  # its own, empty cache
            with pytest.raises(CorruptionError):
                r.read(1)
        assert not v.verify()["ok"]
    finally:
        v.close()


def test_read_cache_bytes_is_a_checked_setting(tmp_path):
    from seqvault.errors import SettingsError

    with pytest.raises(SettingsError, match="read_cache_bytes"):
        SeqVault.open(tmp_path / "s", schema=Schema.from_dict(SCHEMA), read_cache_bytes=-1)


NUMERIC = {"columns": [{"name": "item", "type": "int64"}, {"name": "dwell", "type": "int32"},
                       {"name": "act", "type": "uint8"}]}


def test_a_short_read_from_one_cached_segment_equals_the_general_path(tmp_path, monkeypatch):
    """reads._newest_cached: a plain newest-N read of one cached extent copies each column's
    newest rows straight out of the entry. Its answers equal the uncached general path's for
    every N (inside the segment, all of it, past it), column subset and `strings` mode; it
    is really taken; a column added after the segment was written (absent from the entry)
    goes to the general path, which reads back the default."""
    from seqvault import reads

    rng = np.random.default_rng(3)
    v = SeqVault.open(tmp_path / "s", schema=Schema.from_dict(NUMERIC), durability="none")
    for user, n in ((1, 700), (2, 37), (3, 5_000)):
        ts = np.sort(rng.integers(1_000, 10**7, n))
        v.append(user, {"ts": ts, "item": rng.integers(0, 1 << 40, n),
                        "dwell": rng.integers(-5, 1 << 20, n).astype(np.int32),
                        "act": rng.integers(0, 9, n).astype(np.uint8)})
    v.flush()
    v.merge()
    taken = []
    real = reads._newest_cached
    monkeypatch.setattr(reads, "_newest_cached",
                        lambda *a: (lambda got: taken.append(got is not None) or got)(real(*a)))

    def answers(store: SeqVault) -> dict:
        out = {}
        for user in (1, 2, 3):
            for last in (1, 36, 37, 38, 699, 700, 2_047, 2_048, 2_049, 9_999):
                for cols in (None, ["ts"], ["act", "item"], ["dwell", "ts"]):
                    for strings in ("decode", "codes"):
                        seq = store.read(user, last=last, columns=cols, strings=strings)
                        out[user, last, str(cols), strings] = (
                            {k: seq[k].copy() for k in seq}, seq.dictionaries)
        return out

    try:
        first, second = answers(v), answers(v)  # the second from the cache
        assert sum(taken) > len(second)  # most of the second pass took the one-step copy
        d = dict(NUMERIC)
        d["columns"] = [*NUMERIC["columns"], {"name": "late", "type": "int16", "default": 7}]
        v.evolve_schema(Schema.from_dict(d))
        before = sum(taken)
        late = v.read(1, last=10)
        assert sum(taken) == before  # declined: the entry has no "late" column
        np.testing.assert_array_equal(late["late"], np.full(10, 7, dtype=np.int16))
    finally:
        v.close()
    monkeypatch.setattr(reads, "_newest_cached", real)
    with SeqVault.open(tmp_path / "s", read_only=True, read_cache_bytes=0) as r:
        want = answers(r)
    assert want.keys() == first.keys()
    for k, (cols, dicts) in want.items():
        for got, got_dicts in (first[k], second[k]):
            assert list(got) == [c for c in cols if c != "late"], k
            assert got_dicts == dicts, k
            for name in got:
                np.testing.assert_array_equal(got[name], cols[name], err_msg=str(k))
                assert got[name].dtype == cols[name].dtype
