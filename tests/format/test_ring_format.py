"""Tests named after the rules of docs/format/ring.md (G1-G6): the staging ring of `batch`
appends."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from seqvault import Schema, SeqVault
from seqvault import ring as ringmod
from seqvault import wal as walmod

NUMERIC = Schema.from_dict({"columns": [{"name": "call", "type": "int64", "default": 0}]})
SMALL = 2 * ringmod.RECORD_MAX  # the smallest body the format allows: records wrap often


@pytest.fixture(autouse=True)
def _ring_on(monkeypatch):
    monkeypatch.setenv(ringmod.ENV, "on")  # whatever filesystem the tests run on


def _writer(tmp_path: Path, monkeypatch, size: int = SMALL) -> walmod.WalWriter:
    """A `batch` writer of a new log whose flusher never runs on its own (a 10 s interval):
    the test decides when records are copied out."""
    monkeypatch.setattr(ringmod, "SIZE", size)
    path = tmp_path / walmod.wal_name(1)
    walmod.create_wal(path, 1)
    w = walmod.WalWriter(path, "batch", batch_interval=10.0)
    assert w.ring is not None and w.ring.size == size
    return w


def _log_records(path: Path) -> list[bytes]:
    return [r.payload for r in walmod.scan(path).records]


def _staged(w: walmod.WalWriter, at: walmod.LogPosition) -> list[bytes]:
    return [rec.payload for rec, _raw in walmod.staged(w.path, 1, at)]


def test_G1_a_record_is_staged_header_first_wrapping_at_the_body_end(tmp_path, monkeypatch):
    """Every store of a record (split in two where it wraps) puts all 29 header bytes in place
    before the first payload byte, and the bytes read back are the record's."""
    w = _writer(tmp_path, monkeypatch)
    ring = w.ring
    assert ring is not None
    stores: list[tuple[int, int]] = []
    real = ring.map

    class Recording:
        def __setitem__(self, key, value):
            stores.append((key.start, key.stop))
            real[key] = value

        def __getitem__(self, key):
            return real[key]

    ring.map = Recording()  # type: ignore[assignment]
    try:
        rng = np.random.default_rng(1)
        wrapped = 0
        for i in range(400):
            payload = rng.bytes(int(rng.integers(1, 3000)))
            start = w.size
            stores.clear()
            w.append(payload, events=1)
            body = [(a - ringmod.HEADER_SIZE, b - ringmod.HEADER_SIZE) for a, b in stores]
            written = sum(b - a for a, b in body)
            assert written == ringmod.RECORD_HEADER + len(payload)
            # the header's positions come first, whole, before any payload position
            head = [(start + k) % SMALL for k in range(ringmod.RECORD_HEADER)]
            covered = []
            for a, b in body:
                covered += list(range(a, b))
            assert covered[:ringmod.RECORD_HEADER] == head
            wrapped += len(body) > 2
            assert ring.read(start, w.size)[ringmod.RECORD_HEADER:] == payload
            if i % 40 == 39:
                w.sync()
        assert wrapped >= 3
    finally:
        ring.map = real
        w.close()


def test_G1_a_record_cut_at_any_byte_is_not_taken(tmp_path, monkeypatch):
    """Whatever part of the last record a crash left (its header cut short, or its header and
    part of its payload), the continuation takes the records before it and not it."""
    w = _writer(tmp_path, monkeypatch)
    for i in range(5):
        w.append(bytes([i + 1]) * 100, events=2)
    last_start = w.size
    w.append(b"\x07" * 300, events=3)
    ring = w.ring
    assert ring is not None
    rec = ring.read(last_start, w.size)
    at = walmod.LogPosition(walmod.FILE_HEADER_SIZE, 1, 0)
    assert len(_staged(w, at)) == 6
    for keep in (0, 1, 8, 28, 29, 30, 200, len(rec) - 1):
        cut = rec[:keep] + bytes(len(rec) - keep)
        ring._put(last_start, memoryview(cut))
        assert _staged(w, at) == [bytes([i + 1]) * 100 for i in range(5)], keep
    ring._put(last_start, memoryview(rec))
    assert len(_staged(w, at)) == 6
    w.close()


def test_G2_records_past_the_limit_or_the_room_go_to_the_log_after_the_staged_ones(
        tmp_path, monkeypatch):
    """A record over RECORD_MAX is written into the log itself, after the staged records
    before it are copied out; so is one that would pass the bytes not yet copied out."""
    w = _writer(tmp_path, monkeypatch)
    small = [bytes([i]) * 50 for i in range(1, 4)]
    for p in small:
        w.append(p, events=1)
    assert _log_records(w.path) == []  # staged only
    big = b"B" * (ringmod.RECORD_MAX + 1)
    w.append(big, events=1)
    assert _log_records(w.path) == small + [big]
    # now fill the ring without a copy-out: the record that would overwrite an uncopied byte
    # copies everything out first
    many = [bytes([i % 250 + 1]) * 20_000 for i in range(SMALL // 20_000 + 2)]
    for p in many:
        w.append(p, events=1)
    got = _log_records(w.path)
    assert got[:4] == small + [big] and len(got) > 4
    assert got[4:] == many[:len(got) - 4]
    w.sync()
    assert _log_records(w.path) == small + [big] + many
    w.close()


def test_G3_the_log_holds_a_prefix_and_every_fsync_covers_the_staged_records(
        tmp_path, monkeypatch):
    w = _writer(tmp_path, monkeypatch)
    payloads = [bytes([i + 1]) * (10 + i) for i in range(30)]
    for p in payloads[:10]:
        w.append(p, events=1)
    raw = open(w.path, "rb").read()
    assert not raw[walmod.FILE_HEADER_SIZE:].strip(b"\0")  # nothing in the log yet
    w.sync()  # what the flusher's round does
    assert _log_records(w.path) == payloads[:10]
    assert w.synced.end == w.size
    for p in payloads[10:]:
        w.append(p, events=1)
    assert _log_records(w.path) == payloads[:10]
    w.close()  # a clean close: copied, synced, marked, and the ring is gone (G5)
    assert _log_records(w.path) == payloads
    assert walmod.scan(w.path).mark == (w.synced.end, 30, 30)
    assert not ringmod.ring_path(w.path).exists()


def test_G4_only_the_records_that_continue_the_log_are_taken(tmp_path, monkeypatch):
    """After the body has wrapped many times, a position the log has moved past finds newer
    records (a larger seq) in the body and takes none; the right position takes exactly the
    records not yet copied out."""
    w = _writer(tmp_path, monkeypatch)
    old = walmod.LogPosition(walmod.FILE_HEADER_SIZE, 1, 0)
    for i in range(200):
        w.append(bytes([i % 250 + 1]) * 1500, events=1)
        if i % 20 == 19:
            w.sync()
    assert w.size - walmod.FILE_HEADER_SIZE > 2 * SMALL  # lapped
    before = walmod.scan(w.path)
    assert len(before.records) == 200
    tail = [bytes([7]) * 333, bytes([8]) * 444]
    for p in tail:
        w.append(p, events=2)
    assert _staged(w, old) == []  # an earlier lap's position: nothing there continues it
    assert _staged(w, walmod.LogPosition(before.end, before.next_seq, before.events)) == tail
    # a wrong seq or event count for the right offset takes nothing either
    assert _staged(w, walmod.LogPosition(before.end, before.next_seq + 1, before.events)) == []
    assert _staged(w, walmod.LogPosition(before.end, before.next_seq, before.events + 1)) == []
    w.close()


def test_G4_a_ring_with_old_pages_yields_a_prefix_of_the_genuine_records(tmp_path, monkeypatch):
    """A power loss may leave the unsynced body with any mix of old and new pages: whatever
    mix, the continuation is a prefix of the records really staged there."""
    w = _writer(tmp_path, monkeypatch)
    rng = np.random.default_rng(5)
    for _i in range(120):
        w.append(rng.bytes(900), events=1)
    w.sync()
    ring = w.ring
    assert ring is not None
    old_body = bytes(ring.map[ringmod.HEADER_SIZE:])
    at = walmod.LogPosition(w.size, w.synced.next_seq, w.synced.events)
    staged = [rng.bytes(int(rng.integers(100, 3000))) for _ in range(40)]
    for p in staged:
        w.append(p, events=1)
    new_body = bytes(ring.map[ringmod.HEADER_SIZE:])
    pages = SMALL // 4096
    for _trial in range(30):
        mix = bytearray(new_body)
        for pg in np.flatnonzero(rng.random(pages) < 0.2):
            mix[pg * 4096:(pg + 1) * 4096] = old_body[pg * 4096:(pg + 1) * 4096]
        ring.map[ringmod.HEADER_SIZE:] = bytes(mix)
        got = _staged(w, at)
        assert got == staged[:len(got)]
    ring.map[ringmod.HEADER_SIZE:] = new_body
    assert _staged(w, at) == staged
    w.close()


CHILD = textwrap.dedent("""
    import sys, time
    from seqvault import Schema, SeqVault
    v = SeqVault.open(sys.argv[1], durability="batch", batch_interval=10.0)
    assert v.wal.ring is not None
    base = 1_700_000_000_000  # plausible times: the compiled call stages these
    for u in range(6):
        v.append(u, {"ts": [base + u, base + 10 * u], "call": [u, u]})
        v.append(u, {"ts": [5 + u], "call": [100 + u]})  # tiny times: the Python path
    print("ok", flush=True)
    time.sleep(60)
""")


def test_G5_a_killed_writers_staged_records_reach_the_log_at_the_next_open(tmp_path):
    """A writer whose flusher never copied out (interval 10 s), killed with SIGKILL: its log
    has no record, its ring all twelve; a read-only open serves them from the ring; the next
    writer open copies them into the log before it goes on, serves them, deletes another
    log's ring, and makes a fresh ring; a clean close leaves no ring."""
    path = tmp_path / "s"
    SeqVault.open(path, schema=NUMERIC).close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           ringmod.ENV: "on"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == b"ok\n", proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log = next((path / "wal").glob("wal-*.log"))
    assert walmod.scan(log).records == []  # staged only
    want = {u: sorted([(5 + u, 100 + u), (1_700_000_000_000 + u, u),
                       (1_700_000_000_000 + 10 * u, u)]) for u in range(6)}

    def rows(v):
        return {u: sorted(zip(v.read(u)["ts"].tolist(), v.read(u)["call"].tolist()))
                for u in range(6)}

    with SeqVault.open(path, read_only=True) as r:  # readers take the ring's records (G4)
        assert rows(r) == want
        assert r.verify()["wal_records"] == 12
    stale = log.with_name(walmod.wal_name(99)[:-4] + ".ring")
    stale.write_bytes(b"x")  # another log's ring: deleted at a writer open
    with SeqVault.open(path) as v:
        assert len(walmod.scan(log).records) == 12  # in the log before the open went on
        assert rows(v) == want
        assert not stale.exists()
        assert v.wal is not None and v.wal.ring is not None and _fresh(v.wal.ring.path)
    assert not ringmod.ring_path(log).exists()  # a clean close leaves no ring
    with SeqVault.open(path) as v:
        assert rows(v) == want


def _fresh(path: Path) -> bool:
    return not path.read_bytes()[ringmod.HEADER_SIZE:].strip(b"\0")


@pytest.mark.parametrize("damage", ["magic", "crc", "wal_id", "size"])
def test_G6_a_ring_that_does_not_check_is_ignored(tmp_path, monkeypatch, damage):
    w = _writer(tmp_path, monkeypatch)
    for i in range(4):
        w.append(bytes([i + 1]) * 100, events=1)
    at = walmod.LogPosition(walmod.FILE_HEADER_SIZE, 1, 0)
    assert len(_staged(w, at)) == 4
    where = ringmod.ring_path(w.path)
    fd = os.open(where, os.O_RDWR)
    try:
        if damage == "magic":
            os.pwrite(fd, b"XXXX", 0)
        elif damage == "crc":
            os.pwrite(fd, b"\xff", 34)
        elif damage == "wal_id":
            os.pwrite(fd, ringmod.header(2, SMALL), 0)
        else:
            os.pwrite(fd, ringmod.header(1, SMALL * 2), 0)
    finally:
        os.close(fd)
    assert _staged(w, at) == []
    w.close(sync=False)


def test_the_ring_is_off_where_asked_and_for_sync_and_none(tmp_path, monkeypatch):
    path = tmp_path / walmod.wal_name(1)
    walmod.create_wal(path, 1)
    for durability in ("sync", "none"):
        w = walmod.WalWriter(path, durability)
        assert w.ring is None
        w.close()
    monkeypatch.setenv(ringmod.ENV, "off")
    w = walmod.WalWriter(path, "batch")
    assert w.ring is None
    w.close()
    monkeypatch.setenv(ringmod.ENV, "sometimes")
    with pytest.raises(ValueError, match="SEQVAULT_LOG_RING: 'sometimes' is not one of"):
        walmod.WalWriter(path, "batch")


def test_the_filesystem_decides_where_asked_to(tmp_path, monkeypatch):
    assert ringmod.filesystem_of("/proc") == "proc"  # the longest mount point above the path
    monkeypatch.setenv(ringmod.ENV, "auto")
    monkeypatch.setattr(ringmod, "filesystem_of", lambda p: "btrfs")
    assert not ringmod.wanted(tmp_path / "x.log")
    monkeypatch.setattr(ringmod, "filesystem_of", lambda p: "ext4")
    assert ringmod.wanted(tmp_path / "x.log")


def test_the_compiled_kernel_agrees_on_the_constants():
    from seqvault import prepare

    if prepare.KERNEL is None:
        pytest.skip("the compiled append kernel is not built")
    assert prepare.KERNEL.RING_HEADER == ringmod.HEADER_SIZE
    assert prepare.KERNEL.RING_RECORD_MAX == ringmod.RECORD_MAX
    assert struct.calcsize("<IIBQQI") == ringmod.RECORD_HEADER == walmod.RECORD_HEADER_SIZE
