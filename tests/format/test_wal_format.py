"""Tests named after the rules of docs/format/wal.md (version 2: R1-R6, L1-L7; version 1:
"Version 1")."""

from __future__ import annotations

import struct
import threading
import time
import zlib

import numpy as np
import pytest

from seqvault import CorruptionError, FormatVersionError, SeqVault
from seqvault import wal as walmod

from ..conftest import make_events


def _store(tmp_path, schema, n_appends=5):
    """A cleanly closed store whose log holds `n_appends` records of 20 events (users 0..n-1)."""
    rng = np.random.default_rng(0)
    v = SeqVault.open(tmp_path / "s", schema=schema, durability="sync")
    for u in range(n_appends):
        v.append(u, make_events(rng, 20))
    v.close(flush=False)
    return next((tmp_path / "s" / "wal").glob("wal-*.log"))


def _offsets(path):
    return [r.offset for r in walmod.scan(path).records]


def _unsynced_record(path, schema, user, *, keep=None, flip=None):
    """Write the next record (seq, first_event from the log) after the last one, as a crash
    mid-write leaves it: only its first `keep` bytes, or whole with byte `flip` inverted. It is
    not covered by the header's synced mark: the process died before an fsync covered it."""
    scanned = walmod.scan(path)
    ev = make_events(np.random.default_rng(user), 20)
    sch = schema
    cols = {c.name: np.asarray(ev[c.name], dtype=object if c.is_string else c.dtype)
            for c in sch.columns}
    payload = walmod.encode_append(sch, [user], [20], np.asarray(ev["ts"], np.int64), cols)
    rec = bytearray(walmod.frame(walmod.REC_APPEND, payload, scanned.next_seq, scanned.events,
                                 20))
    if flip is not None:
        rec[flip] ^= 0xFF
    rec = rec[:keep] if keep is not None else rec
    with open(path, "r+b") as fh:
        fh.seek(scanned.end)
        fh.write(bytes(rec))
    return scanned.end, len(rec)


def test_R1_torn_tail_is_zeroed(tmp_path, schema):
    log = _store(tmp_path, schema, 4)
    size = log.stat().st_size
    end, torn = _unsynced_record(log, schema, 4, keep=150)
    assert walmod.scan(log).problems == []
    with SeqVault.open(tmp_path / "s") as v:
        assert [v.read(u).count for u in range(5)] == [20, 20, 20, 20, 0]
        assert v.stats()["torn_tail_bytes"] == torn
        raw = log.read_bytes()
        assert len(raw) == size  # still whole chunks: the torn bytes are zeroed, not cut
        assert not raw[end:].strip(b"\0")


def test_R1_short_record_header_is_torn_tail(tmp_path, schema):
    log = _store(tmp_path, schema, 4)
    _unsynced_record(log, schema, 4, keep=5)
    with SeqVault.open(tmp_path / "s") as v:
        assert v.read(3).count == 20 and v.stats()["torn_tail_bytes"] == 5
        assert v.verify()["ok"]


def test_R1_checksum_mismatch_in_an_unsynced_last_record_is_torn_tail(tmp_path, schema):
    log = _store(tmp_path, schema, 4)
    _unsynced_record(log, schema, 4, flip=60)
    with SeqVault.open(tmp_path / "s") as v:
        assert v.read(4).count == 0 and v.read(3).count == 20


def test_R2_the_log_ends_where_only_zeros_follow(tmp_path, schema):
    log = _store(tmp_path, schema)
    scanned = walmod.scan(log)
    assert len(scanned.records) == 5 and not scanned.problems and not scanned.torn
    raw = log.read_bytes()
    assert not raw[scanned.end:].strip(b"\0")
    assert [r.seq for r in scanned.records] == [1, 2, 3, 4, 5]
    assert [r.first_event for r in scanned.records] == [0, 20, 40, 60, 80]


def test_R3_damage_in_the_middle_refuses_the_writer_and_serves_readers(tmp_path, schema):
    log = _store(tmp_path, schema)
    offs = _offsets(log)
    raw = bytearray(log.read_bytes())
    raw[offs[1] + 40] ^= 0xFF  # inside record 2 of 5
    log.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError, match="seqvault repair"):
        SeqVault.open(tmp_path / "s")
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert [r.read(u).count for u in range(5)] == [20, 0, 20, 20, 20]
        (p,) = r.stats()["log_damage"]
        assert (p["kind"], p["offset_start"], p["offset_end"]) == ("damaged", offs[1], offs[2])
        assert (p["seq_first"], p["seq_last"], p["events"]) == (2, 2, 20)


def test_R4_wrong_log_id_is_corruption(tmp_path, schema):
    log = _store(tmp_path, schema)
    raw = bytearray(log.read_bytes())
    mark = walmod.scan(log).mark
    raw[:walmod.FILE_HEADER_SIZE] = walmod.file_header(999, walmod.CHUNK, 0, mark)
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
    log = _store(tmp_path, schema, 4)
    whole = log.read_bytes()
    end, _n = _unsynced_record(log, schema, 4, keep=100)  # a record being written right now
    partial = log.read_bytes()
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert r.read(4).count == 0 and r.log_damage == []
        assert log.read_bytes() == partial
        log.write_bytes(whole)
        _unsynced_record(log, schema, 4)  # the write completes
        r.refresh()
        assert r.read(4).count == 20 and r.log_damage == []


def test_L1_a_missing_record_is_a_gap_in_the_sequence(tmp_path, schema):
    log = _store(tmp_path, schema)
    offs = _offsets(log) + [walmod.scan(log).end]
    raw = log.read_bytes()
    spliced = raw[:offs[2]] + raw[offs[3]:]  # record 3 cut out, the rest moved up
    log.write_bytes(spliced + bytes(len(raw) - len(spliced)))
    (p,) = walmod.scan(log).problems
    assert (p.kind, p.seq_first, p.seq_last, p.events) == ("damaged", 3, 3, 20)


def test_L2_the_writer_keeps_whole_chunks_and_half_a_chunk_of_zeros(tmp_path, schema):
    rng = np.random.default_rng(1)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v:
        log = next((tmp_path / "s" / "wal").glob("wal-*.log"))
        chunk = walmod.CHUNK
        sizes = set()
        for i in range(150):
            # a few calls larger than half a chunk: the file grows by several chunks at once
            v.append(i % 5, make_events(rng, 9000 if i % 20 == 19 else 200))
            raw = log.read_bytes()
            end = v.wal.size
            assert len(raw) % chunk == 0 and len(raw) - end >= chunk // 2
            assert not raw[end:].strip(b"\0")
            sizes.add(len(raw))
        assert len(sizes) > 2 and v.wal.extensions >= 2


def test_L3_a_cut_shows_at_any_size(tmp_path, schema):
    rng = np.random.default_rng(0)
    v = SeqVault.open(tmp_path / "s", schema=schema, durability="sync")
    for u in range(4):
        v.append(u, make_events(rng, 20))
    v.append(4, make_events(rng, 12_000))  # reaches past the first chunk
    v.close(flush=False)
    log = next((tmp_path / "s" / "wal").glob("wal-*.log"))
    offs = _offsets(log)
    raw = log.read_bytes()
    assert walmod.scan(log).end > walmod.CHUNK and len(raw) % walmod.CHUNK == 0
    for cut in (offs[3] + 11, offs[4]):  # mid-record, and at a record boundary
        log.write_bytes(raw[:cut])
        (p,) = walmod.scan(log).problems
        assert p.kind == "truncated" and "multiple of the chunk size" in p.detail
    # A cut at a multiple of the chunk size, through the last record: the data left reaches
    # into the final half-chunk, which the writer always keeps zero.
    log.write_bytes(raw[:walmod.CHUNK])
    (p,) = walmod.scan(log).problems
    assert p.kind == "truncated" and "final half-chunk" in p.detail
    assert (p.start, p.seq_first, p.seq_last, p.events) == (offs[4], 5, 5, 12_000)


def test_L3_a_cut_inside_the_header(tmp_path, schema):
    log = _store(tmp_path, schema)
    with open(log, "r+b") as fh:
        fh.truncate(20)
    (p,) = walmod.scan(log).problems
    assert p.kind == "truncated" and p.start == 0
    with pytest.raises(CorruptionError, match="seqvault repair"):
        SeqVault.open(tmp_path / "s")
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert r.read(0).count == 0 and r.log_damage[0]["kind"] == "truncated"
    assert SeqVault.repair_log(tmp_path / "s")["repaired"]
    with SeqVault.open(tmp_path / "s") as v:
        assert v.verify()["ok"]


def test_L4_checksum_mismatch_in_a_synced_last_record_is_damage(tmp_path, schema):
    log = _store(tmp_path, schema)  # a clean close: the header mark covers every record
    offs = _offsets(log)
    raw = bytearray(log.read_bytes())
    raw[offs[4] + 50] ^= 0xFF
    log.write_bytes(bytes(raw))
    (p,) = walmod.scan(log).problems
    assert (p.kind, p.seq_first, p.seq_last, p.events) == ("damaged", 5, 5, 20)
    with pytest.raises(CorruptionError, match="seqvault repair"):
        SeqVault.open(tmp_path / "s")


def test_L4_a_cut_at_a_record_boundary_is_measured_against_the_mark(tmp_path, schema):
    log = _store(tmp_path, schema)
    offs = _offsets(log)
    with open(log, "r+b") as fh:
        fh.truncate(offs[2])
    (p,) = walmod.scan(log).problems
    assert (p.kind, p.start, p.seq_first, p.seq_last, p.events) == (
        "truncated", offs[2], 3, 5, 60)


def test_L5_the_manifest_remembers_the_synced_position(tmp_path, schema):
    rng = np.random.default_rng(0)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="sync") as v:
        for u in range(5):
            v.append(u, make_events(rng, 20))
        v.delete(0)  # a commit that keeps the log: it records the synced position
        synced = v.manifest.synced_of(v.wal_id)
        log = v.wal.path
        offs = [r.offset for r in walmod.scan(log).records]
        assert synced is not None and synced[0] == walmod.scan(log).end and synced[1:] == (5, 100)
        v.close(flush=False)
    raw = bytearray(log.read_bytes())
    raw[20] ^= 0xFF  # the header (and with it its mark) is damaged
    log.write_bytes(bytes(raw[:offs[3]]) + bytes(walmod.CHUNK - offs[3]))  # cut, whole chunk
    problems = walmod.scan(log, synced=synced).problems
    assert [p.kind for p in problems] == ["header", "damaged"]
    assert (problems[1].seq_first, problems[1].seq_last, problems[1].events) == (4, 5, 40)
    assert walmod.scan(log).problems[0].kind == "header"  # without the manifest: less known


def test_L7_a_damaged_header_is_reported(tmp_path, schema):
    log = _store(tmp_path, schema)
    raw = bytearray(log.read_bytes())
    raw[18] ^= 0x01  # created_ns
    log.write_bytes(bytes(raw))
    (p,) = walmod.scan(log).problems
    assert p.kind == "header" and (p.start, p.end) == (0, walmod.FILE_HEADER_SIZE)
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert [r.read(u).count for u in range(5)] == [20] * 5
    assert SeqVault.repair_log(tmp_path / "s")["repaired"]
    with SeqVault.open(tmp_path / "s") as v:
        assert v.verify()["ok"] and [v.read(u).count for u in range(5)] == [20] * 5


# ---------------------------------------------------------------------- version 1
def _v1_log(path, wal_id, payloads, tail=b""):
    head = struct.pack("<4sHHQQQ", b"SVWL", 1, 0, wal_id, 0, 0)
    body = b""
    for p in payloads:
        body += struct.pack("<IIB", len(p), zlib.crc32(p, zlib.crc32(b"\x01")), 1) + p
    path.write_bytes(head + body + tail)
    return [len(head) + sum(9 + len(q) for q in payloads[:i]) for i in range(len(payloads))]


def _payloads(schema, n):
    out = []
    for u in range(n):
        ev = make_events(np.random.default_rng(u), 20)
        cols = {c.name: np.asarray(ev[c.name], dtype=object if c.is_string else c.dtype)
                for c in schema.columns}
        out.append(walmod.encode_append(schema, [u], [20], np.asarray(ev["ts"], np.int64),
                                        cols))
    return out


def test_version_1_log_still_opens_and_the_writer_moves_to_version_2(tmp_path, schema):
    log = _store(tmp_path, schema, 0)
    _v1_log(log, 1, _payloads(schema, 5), tail=b"\x05\x00")  # and a torn tail (R1)
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert [r.read(u).count for u in range(5)] == [20] * 5 and r.log_damage == []
    with SeqVault.open(tmp_path / "s") as v:
        assert [v.read(u).count for u in range(5)] == [20] * 5
        assert walmod.read_header(v.wal.path)[0] == 2 and not log.exists()
        v.append(7, make_events(np.random.default_rng(9), 3))
    with SeqVault.open(tmp_path / "s") as v:
        assert [v.read(u).count for u in range(5)] == [20] * 5 and v.read(7).count == 3
        assert v.verify()["ok"]


def test_version_1_damage_in_the_middle_is_reported_and_repaired(tmp_path, schema):
    log = _store(tmp_path, schema, 0)
    offs = _v1_log(log, 1, _payloads(schema, 5))
    raw = bytearray(log.read_bytes())
    raw[offs[2] + 30] ^= 0xFF
    log.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError, match="seqvault repair"):
        SeqVault.open(tmp_path / "s")
    with SeqVault.open(tmp_path / "s", read_only=True) as r:
        assert [r.read(u).count for u in range(5)] == [20, 20, 0, 0, 0]
        assert r.log_damage[0]["offset_start"] == offs[2]
    SeqVault.repair_log(tmp_path / "s")
    with SeqVault.open(tmp_path / "s") as v:
        assert [v.read(u).count for u in range(5)] == [20, 20, 0, 0, 0] and v.verify()["ok"]


def test_group_commit_shares_fsyncs(tmp_path, schema):
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


def test_L2_the_batch_flusher_grows_chunks_ahead_and_keeps_the_rule(tmp_path, schema):
    """`batch`'s flusher grows the file once less than `AHEAD_CHUNKS` chunks of zeros follow
    the records (appends then seldom zero-fill and fsync themselves); whole chunks and at
    least half a chunk of zeros after the records, as rule L2 says, before and after."""
    rng = np.random.default_rng(2)
    chunk = walmod.CHUNK
    # The step itself, without a flusher racing it (durability none has none).
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v:
        log = next((tmp_path / "s" / "wal").glob("wal-*.log"))
        appended = 0
        while v.wal.extensions == 0 or v.wal._size - v.wal.size >= chunk:
            v.append(1, make_events(rng, 200))  # until less than a whole chunk of zeros is left
            appended += 200
        before = v.wal.extensions
        v.wal._grow_ahead()
        raw = log.read_bytes()
        end = v.wal.size
        assert v.wal.extensions == before + 1
        assert len(raw) % chunk == 0 and len(raw) - end >= walmod.AHEAD_CHUNKS * chunk
        assert not raw[end:].strip(b"\0")
        v.wal._grow_ahead()  # chunks ahead already: nothing to do
        assert v.wal.extensions == before + 1
        v.append(2, make_events(rng, 200))  # fits: the append itself does not extend
        assert v.wal.extensions == before + 1
    with SeqVault.open(tmp_path / "s") as v:  # replays the same records
        assert v.read(1)["ts"].size == appended and v.read(2)["ts"].size == 200
    # The batch flusher runs it after its fsync: a chunk ahead once it has caught up.
    with SeqVault.open(tmp_path / "b", schema=schema, durability="batch") as v:
        for _ in range(60):
            v.append(3, make_events(rng, 200))
        deadline = time.monotonic() + 30
        while v.wal._size - v.wal.size < chunk and time.monotonic() < deadline:
            time.sleep(0.01)
        log = next((tmp_path / "b" / "wal").glob("wal-*.log"))
        raw = log.read_bytes()
        assert len(raw) % chunk == 0 and len(raw) - v.wal.size >= chunk
        assert not raw[v.wal.size:].strip(b"\0")


@pytest.mark.parametrize("payload", [b"", b"\x81\xa1v\x01", bytes(range(256)) * 40])
def test_the_record_layout_is_one_crc_over_the_header_rest_and_payload(payload):
    """"Record": crc32 | u32 payload length | u8 type | u64 seq | u64 events before | u32 events
    | payload, little-endian; the crc covers all that follows it. The compiled builder
    (native_crc.record), which the writer uses when built, gives the same bytes as the Python
    reference, and both read back through the scanner's header layout."""
    cases = [(walmod.REC_APPEND, 0, 0, 0), (walmod.REC_APPEND, 7, 1_000, 20),
             (255, 2**64 - 1, 2**64 - 1, 2**32 - 1)]
    builders = [walmod.record]
    if walmod.crc_many.KERNEL is not None:
        builders.append(walmod.crc_many.KERNEL.record)
    for rec_type, seq, before, events in cases:
        for build in builders:
            rec = build(payload, rec_type, seq, before, events)
            crc, length, rtype, rseq, rbefore, revents = struct.unpack_from("<IIBQQI", rec)
            assert (length, rtype, rseq, rbefore, revents) == (len(payload), rec_type, seq,
                                                                before, events)
            assert crc == zlib.crc32(rec[4:])
            assert rec[walmod.RECORD_HEADER_SIZE:] == payload
            assert len(rec) == walmod.RECORD_HEADER_SIZE + len(payload)


def test_the_compiled_record_builder_refuses_fields_out_of_range():
    kernel = walmod.crc_many.KERNEL
    if kernel is None:
        pytest.skip("native_crc not built")
    with pytest.raises((ValueError, OverflowError)):
        kernel.record(b"x", 256, 0, 0, 1)
    with pytest.raises((ValueError, OverflowError)):
        kernel.record(b"x", 1, 0, 0, 2**32)
    with pytest.raises((ValueError, OverflowError)):
        kernel.record(b"x", 1, -1, 0, 1)



def _header_mark(path):
    return struct.unpack_from("<QQQ", open(path, "rb").read(64), 32)


def test_W3_the_mark_claims_only_what_an_earlier_fsync_covered(tmp_path, monkeypatch):
    """Every fsync of `sync` appends finds the header claiming at most what the fsync before it
    covered, never the record it is about to sync; with MARK_INTERVAL 0 it is rewritten
    before every fsync (the mark then lags exactly one fsync); a clean close claims all."""
    path = tmp_path / walmod.wal_name(1)
    walmod.create_wal(path, 1)
    monkeypatch.setattr(walmod, "MARK_INTERVAL", 0.0)
    w = walmod.WalWriter(path, "sync")
    seen = []
    real = walmod.iofaults.fdatasync

    def fdatasync(fd):
        seen.append((_header_mark(path), w._end, w.synced))
        real(fd)

    monkeypatch.setattr(walmod.iofaults, "fdatasync", fdatasync)
    for i in range(6):
        w.commit(w.append(b"x" * (10 + i), events=i + 1))
    assert len(seen) == 6
    for k, (mark, end, synced_before) in enumerate(seen):
        assert mark[0] < end  # never the record this fsync is for
        if k:  # rewritten every time: exactly what the previous fsync covered
            assert mark == (synced_before.end, synced_before.next_seq - 1, synced_before.events)
    w.close()
    assert _header_mark(path) == (w.synced.end, 6, sum(range(1, 7)))


def test_W3_the_mark_is_rewritten_at_most_every_mark_interval(tmp_path, monkeypatch):
    """With fsyncs faster than MARK_INTERVAL, the header (a second page to write) is rewritten
    only when the last rewrite is MARK_INTERVAL old, and then says what the previous fsync
    covered; the fsyncs between leave it as it was."""
    path = tmp_path / walmod.wal_name(1)
    walmod.create_wal(path, 1)
    clock = [100.0]
    monkeypatch.setattr(walmod, "_now", lambda: clock[0])
    w = walmod.WalWriter(path, "sync")
    writes = []
    real_pwrite = walmod.iofaults.pwrite

    def pwrite(fd, data, offset):
        if offset == 0:
            writes.append(walmod._MARK.unpack_from(data, walmod._MARK_AT))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(walmod.iofaults, "pwrite", pwrite)
    w.commit(w.append(b"a", events=1))  # nothing synced before: no claim to write
    first = w.synced
    w.commit(w.append(b"b", events=1))  # due: claims the first fsync's records
    assert writes == [(first.end, 1, 1)]
    for _k in range(5):  # the clock stands still: five fsyncs, no header write
        w.commit(w.append(b"c", events=1))
    assert len(writes) == 1 and _header_mark(path) == (first.end, 1, 1)
    before = w.synced
    clock[0] += walmod.MARK_INTERVAL
    w.commit(w.append(b"d", events=1))  # due again: what the fsync before this one covered
    assert writes[-1] == (before.end, before.next_seq - 1, before.events) == _header_mark(path)
    assert w.synced.end > before.end
    w.close()
    assert _header_mark(path) == (w.synced.end, 8, 8)
