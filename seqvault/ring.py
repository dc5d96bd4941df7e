"""The staging ring: `batch` appends store their log records in a mapped file instead of
writing each with its own `pwrite`; the flusher writes them into the log in one `pwrite` per
round, before its fdatasync. Format and rules: docs/format/ring.md (G1-G6).

Why: the `pwrite` of a ~100-byte record was 3.8 us of a one-event append on the 2-core machine
and ~1-6 us on the 16-core one (it varies by lease), most of what the store itself spends
on such a call; RocksDB pays the same system call, so no other saving could take a one-event
`batch` append to 2x. A store into a shared mapping costs ~0.15 us and, like a `pwrite`'s bytes,
sits in the page cache, which survives a killed process (docs/design/realtime.md, "A staging
ring for batch appends").

Why not map the log itself: stores through a mapping of the log made each fdatasync of the log
cost 12-14 ms instead of 0.4 ms (ext4, measured from a second process, so not the GIL). The ring
is a different file that is never fsynced, so the log's fdatasync stays at 0.18-0.20 ms while
the ring is written (measured the same way). The ring lives beside the log, on the store's own
filesystem, so its pages reach the disk like any written page (a killed writer followed by a
clean reboot still finds them), unlike a ring in /dev/shm.

Where it is not used: `sync` (one fdatasync a call dominates) and `none` (no flusher to copy
the ring out) keep `pwrite`, and so does any filesystem not known to overwrite written blocks
in place: a store into a mapped page that needs a new block (btrfs, ZFS) gets SIGBUS on a full
disk instead of an error. `SEQVAULT_LOG_RING=off` turns it off, `=on` forces it (Linux).
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import time
import zlib
from pathlib import Path

MAGIC = b"SVRG"
VERSION = 1
HEADER_SIZE = 4096  # the body starts page-aligned
SIZE = 512 << 10  # body bytes: ~6x what 5 ms of appends at 20 MB/s stage between flushes
RECORD_MAX = 64 << 10  # larger records go to the log by pwrite (rule G2)
RECORD_HEADER = 29  # a log record's header: crc, length, type, seq, first_event, events
_HEAD = struct.Struct("<4sHHQQQ")  # magic, version, reserved, wal_id, size, created_ns
_REC = struct.Struct("<IIBQQI")
IN_PLACE_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "tmpfs"})
ENV = "SEQVAULT_LOG_RING"
CHOICES = ("auto", "on", "off")


def ring_path(log_path: Path) -> Path:
    """The ring of a log: `wal-NNNNNNNN.ring` beside `wal-NNNNNNNN.log`."""
    return log_path.with_suffix(".ring")


def filesystem_of(path: Path | str) -> str | None:
    """The type of the filesystem holding `path` (`ext4`, `btrfs`, ...), from the longest mount
    point above it in /proc/self/mountinfo; None where that cannot be read."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, fs_type = -1, None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if not sep or len(fields) < 5 or not rest:
            continue
        point = fields[4]
        for code in ("\\040", "\\011", "\\012", "\\134"):  # mountinfo's octal escapes
            point = point.replace(code, chr(int(code[1:], 8)))
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:  # a later mount on the same point hides the earlier
            best, fs_type = len(point), rest[0]
    return fs_type


def wanted(log_path: Path) -> bool:
    """Whether a `batch` writer of this log stages its records in a ring (module docstring)."""
    how = os.environ.get(ENV, "auto")
    if how not in CHOICES:
        raise ValueError(f"{ENV}: {how!r} is not one of {', '.join(CHOICES)}")
    if how == "off" or not sys.platform.startswith("linux") or sys.maxsize < 2**40:
        return False
    return how == "on" or filesystem_of(log_path.parent) in IN_PLACE_FILESYSTEMS


def header(wal_id: int, size: int) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, 0, wal_id, size, time.time_ns())
    return head + struct.pack("<I", zlib.crc32(head))


def create(path: Path, wal_id: int, size: int | None = None) -> None:
    """A new ring: header and `size` written zeros (allocated blocks: a store into them needs
    none), fsynced and renamed into place, so a ring is never seen half made (rule G5). Plain
    `os` calls, not the fault layer's: a writer that cannot make its ring writes every record
    with `pwrite` instead (WalWriter), so a failure here costs speed, never data."""
    size = SIZE if size is None else size
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, HEADER_SIZE + size)
        zeros = bytes(1 << 20)
        pos = HEADER_SIZE
        while pos < HEADER_SIZE + size:
            pos += os.pwrite(fd, memoryview(zeros)[:min(len(zeros), HEADER_SIZE + size - pos)],
                             pos)
        os.pwrite(fd, header(wal_id, size), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def read_header(data: bytes, wal_id: int) -> int | None:
    """The body size of a ring whose header checks and names log `wal_id`, else None (rule
    G6: such a ring is ignored)."""
    if len(data) < _HEAD.size + 4:
        return None
    magic, version, _r, rid, size, _ns = _HEAD.unpack_from(data, 0)
    crc = struct.unpack_from("<I", data, _HEAD.size)[0]
    if (magic != MAGIC or version != VERSION or rid != wal_id or zlib.crc32(data[:_HEAD.size])
            != crc or size < 2 * RECORD_MAX or size % 4096):
        return None
    return int(size)


class Ring:
    """A writer's open ring: a shared, writable mapping of the whole file."""

    def __init__(self, path: Path, wal_id: int) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR)
        try:
            size = read_header(os.pread(fd, HEADER_SIZE, 0), wal_id)
            if size is None or os.fstat(fd).st_size != HEADER_SIZE + size:
                raise ValueError(f"{path}: not the ring of log {wal_id}")
            self.size = size
            self.map = mmap.mmap(fd, HEADER_SIZE + size, flags=mmap.MAP_SHARED,
                                 prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)  # the mapping keeps its own reference to the file

    def store(self, at: int, rec: bytes) -> None:
        """Stage record `rec` of log offset `at` (rule G1): its header's bytes first, then its
        payload's, each wrapping at the body's end; each slice assignment is one memcpy in a
        C call of its own, so a crash never leaves payload bytes behind a missing header."""
        view = memoryview(rec)
        self._put(at, view[:RECORD_HEADER])
        self._put(at + RECORD_HEADER, view[RECORD_HEADER:])

    def _put(self, at: int, data: memoryview) -> None:
        pos = HEADER_SIZE + at % self.size
        first = min(len(data), HEADER_SIZE + self.size - pos)
        self.map[pos:pos + first] = data[:first]
        if first < len(data):
            self.map[HEADER_SIZE:HEADER_SIZE + len(data) - first] = data[first:]

    def read(self, start: int, end: int) -> bytes:
        """Log bytes [start, end) as staged (end - start <= size)."""
        return _unwrap(self.map, self.size, start, end)

    def close(self) -> None:
        self.map.close()


def _unwrap(buf: mmap.mmap, size: int, start: int, end: int) -> bytes:
    pos = HEADER_SIZE + start % size
    n = end - start
    first = min(n, HEADER_SIZE + size - pos)
    if first == n:
        return bytes(buf[pos:pos + n])
    return bytes(buf[pos:pos + first]) + bytes(buf[HEADER_SIZE:HEADER_SIZE + n - first])


def _pread(fd: int, size: int, start: int, end: int) -> bytes:
    pos = HEADER_SIZE + start % size
    n = end - start
    first = min(n, HEADER_SIZE + size - pos)
    got = os.pread(fd, first, pos)
    if first < n:
        got += os.pread(fd, n - first, HEADER_SIZE)
    return got


def continuation(log_path: Path, wal_id: int, end: int, seq: int, events: int,
                 record_types: frozenset[int] | set[int]
                 ) -> list[tuple[int, int, bytes, int, int, bytes]]:
    """The records staged in the log's ring that continue the log at `end`, whose next record
    has sequence number `seq` and `events` events before it (rule G4): each must carry exactly
    that seq and first_event, a known type, a length within RECORD_MAX and a matching crc;
    the first position that fails ends them. [(offset, type, payload, end, events, the
    record's bytes)]; none when there is no ring or its header does not name this log."""
    try:
        fd = os.open(ring_path(log_path), os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        size = read_header(os.pread(fd, HEADER_SIZE, 0), wal_id)
        if size is None or os.fstat(fd).st_size != HEADER_SIZE + size:
            return []
        out: list[tuple[int, int, bytes, int, int, bytes]] = []
        at, limit = end, end + size
        while at + RECORD_HEADER <= limit:
            head = _pread(fd, size, at, at + RECORD_HEADER)
            crc, length, rtype, rseq, first, n = _REC.unpack(head)
            rec_end = at + RECORD_HEADER + length
            if (rseq != seq or first != events or rtype not in record_types or length < 1
                    or length > RECORD_MAX or rec_end > limit):
                break
            payload = _pread(fd, size, at + RECORD_HEADER, rec_end)
            if zlib.crc32(payload, zlib.crc32(head[4:])) != crc:
                break
            out.append((at, rtype, payload, rec_end, n, head + payload))
            at, seq, events = rec_end, seq + 1, events + n
        return out
    finally:
        os.close(fd)
