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
