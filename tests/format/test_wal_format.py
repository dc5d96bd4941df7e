"""Tests named after the recovery rules of docs/format/wal.md."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from seqvault import CorruptionError, FormatVersionError, SeqVault
from seqvault import wal as walmod

from ..conftest import make_events


def _store(tmp_path, schema, n_appends=5):
    rng = np.random.default_rng(0)
    v = SeqVault.open(tmp_path / "s", schema=schema, durability="sync")
    for u in range(n_appends):
        v.append(u, make_events(rng, 20))
    v.close(flush=False)
    return next((tmp_path / "s" / "wal").glob("wal-*.log"))


def _offsets(path):
    return [off for off, _t, _p in walmod.scan(path).records]


def test_R1_torn_tail_is_truncated(tmp_path, schema):
    log = _store(tmp_path, schema)
    offs = _offsets(log)
    size = log.stat().st_size
    with open(log, "r+b") as fh:
        fh.truncate(size - 7)  # cut into the last record
    with SeqVault.open(tmp_path / "s") as v:
        assert [v.read(u).count for u in range(5)] == [20, 20, 20, 20, 0]
        assert v.stats()["torn_tail_bytes"] == size - 7 - offs[-1]
        assert log.stat().st_size == offs[-1]  # cut at the end of the last good record


def test_R1_short_record_header_is_torn_tail(tmp_path, schema):
    log = _store(tmp_path, schema)
    with open(log, "ab") as fh:
        fh.write(b"\x05\x00")
    with SeqVault.open(tmp_path / "s") as v:
        assert v.read(4).count == 20


def test_R1_checksum_mismatch_in_last_record_is_torn_tail(tmp_path, schema):
    log = _store(tmp_path, schema)
    raw = bytearray(log.read_bytes())
    raw[-3] ^= 0xFF
    log.write_bytes(bytes(raw))
    with SeqVault.open(tmp_path / "s") as v:
        assert v.read(4).count == 0 and v.read(3).count == 20


def test_R2_zero_filled_tail_is_torn_tail(tmp_path, schema):
    log = _store(tmp_path, schema)
    with open(log, "ab") as fh:
        fh.write(b"\x00" * 4096)
    with SeqVault.open(tmp_path / "s") as v:
        assert [v.read(u).count for u in range(5)] == [20] * 5


def test_R3_corruption_in_the_middle_is_refused(tmp_path, schema):
    log = _store(tmp_path, schema)
    offs = _offsets(log)
    raw = bytearray(log.read_bytes())
    raw[offs[1] + 20] ^= 0xFF  # inside record 2 of 5
    log.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError, match="refusing to drop"):
        SeqVault.open(tmp_path / "s")
    with pytest.raises(CorruptionError):
        SeqVault.open(tmp_path / "s", read_only=True)


def test_R4_wrong_log_id_is_corruption(tmp_path, schema):
    log = _store(tmp_path, schema)
    raw = bytearray(log.read_bytes())
    struct.pack_into("<Q", raw, 8, 999)
    log.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError, match="log id"):
        SeqVault.open(tmp_path / "s")


def test_R5_newer_log_version_is_refused(tmp_path, schema):
    log = _store(tmp_path, schema)
    raw = bytearray(log.read_bytes())
    struct.pack_into("<H", raw, 4, 9)
    log.write_bytes(bytes(raw))
    with pytest.raises(FormatVersionError):
        SeqVault.open(tmp_path / "s")


def test_R6_reader_does_not_truncate_and_catches_up(tmp_path, schema):
    log = _store(tmp_path, schema)
    whole = log.read_bytes()
    log.write_bytes(whole[:-7])  # a record being written right now
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert r.read(4).count == 0
        assert log.stat().st_size == len(whole) - 7
        log.write_bytes(whole)  # the write completes
        r.refresh()
        assert r.read(4).count == 20


def test_group_commit_shares_fsyncs(tmp_path, schema):
    import threading

    rng = np.random.default_rng(0)
    events = [make_events(rng, 3) for _ in range(8)]
    with SeqVault.open(tmp_path / "s", schema=schema, durability="sync") as v:
        def worker(i):
            for _ in range(25):
                v.append(i, events[i])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        st = v.stats()
        assert st["appends"] == 200
        assert 1 <= st["wal_fsyncs"] <= 200  # every append covered; never more fsyncs than appends
        assert all(v.read(i).count == 75 for i in range(8))


def test_newer_store_format_is_refused(tmp_path, schema):
    SeqVault.open(tmp_path / "s", schema=schema).close()
    from seqvault.meta import Meta

    m = Meta(tmp_path / "s" / "meta", read_only=False)
    with m.begin(write=True) as txn:
        m.set_meta(txn, "format_version", 99)
    m.close()
    with pytest.raises(FormatVersionError, match="newer"):
        SeqVault.open(tmp_path / "s")
    with pytest.raises(FormatVersionError):
        SeqVault.open(tmp_path / "s", read_only=True)
