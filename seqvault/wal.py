"""Write-ahead log: CRC-framed, numbered records in a preallocated file, group commit, and a
scanner that tells a torn tail (never acknowledged) from a cut or damaged log (acknowledged
records missing).

Format in docs/format/wal.md (version 2; version-1 logs are still read). Each append call
becomes exactly one record written with one ``pwrite()`` at the log's tracked end, so a record
is either wholly in the file or is the torn tail. Durability modes:

* ``sync``  — the call returns after fdatasync covers its record. Concurrent callers share
  fsyncs (group commit: whoever fsyncs first covers everything written before it).
* ``batch`` — the call returns after the write; a background thread fsyncs at most every
  ``batch_interval`` seconds (default 5 ms). A process crash loses nothing (the bytes are in the
  OS page cache); a power loss may lose the last few milliseconds.
* ``none``  — write only; the OS decides when the bytes reach the disk.

Why preallocation: the file grows in zero-filled chunks of `CHUNK` bytes, made durable before a
record may enter them, and the writer keeps at least half a chunk of zeros after the last
record. So a valid log's size is a multiple of the chunk size and its final half-chunk is zero:
a cut anywhere shows (wal.md, rule L3). It also lets fdatasync skip the file-size update.
The header's *mark* (synced end, sequence number and event count, as of the previous fsync)
says what the log itself acknowledged, so a cut or damaged tail is measured against it.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from . import crc_many, iofaults
from . import ring as ring_mod
from .errors import CorruptionError, FormatVersionError, WriterFailed
from .schema import Schema
from .settings import DURABILITY_MODES

MAGIC = b"SVWL"
FORMAT_VERSION = 2
# magic, version, reserved, wal_id, created_ns, chunk, reserved, mark_end, mark_seq, mark_events
_FILE_HEAD = struct.Struct("<4sHHQQIIQQQ")  # 56 bytes, then crc32 of them and 4 zero bytes
_MARK = struct.Struct("<QQQ")
_MARK_AT = 32  # offset of mark_end in the header
FILE_HEADER_SIZE = 64
# crc32 of the rest, payload length, type, seq, events before this record, events in it
_REC_HEAD = struct.Struct("<IIBQQI")
RECORD_HEADER_SIZE = _REC_HEAD.size  # 29
MAX_RECORD = 1 << 30
CHUNK = 256 << 10  # preallocation unit (docs/design/safety.md, section 7, has the numbers)
# Zeros the writer keeps ahead of the records, in chunks: appends of 20-100 events write
# 50-100 MB/s, more than one chunk per 5 ms flusher round, and each growth an append had to do
# itself cost it a zero-fill and an fsync (~0.6 ms; docs/design/realtime.md, "The log grown
# four chunks ahead").
AHEAD_CHUNKS = 4
# The header mark (rule W3) is rewritten before an fsync only when the last rewrite is at least
# this old: the mark is a second dirty page far from the records, and on the 16-core machine's
# disk an fdatasync of two pages allowed 8.2-10.8k rounds/s against 12.1-15.9k for one page
# (docs/design/safety.md, "The mark's cost on a fast disk"). At `batch`'s 5 ms rounds every
# fsync still rewrites it; `sync` appends rewrite it once per this many seconds of fsyncs.
MARK_INTERVAL = 0.005

# Version 1 (docs/format/wal.md, "Version 1"): read, never written.
_FILE_HEAD_V1 = struct.Struct("<4sHHQQQ")  # magic, version, reserved, wal_id, created_ns, reserved
_REC_HEAD_V1 = struct.Struct("<IIB")  # payload length, crc32(type + payload), type
FILE_HEADER_SIZE_V1 = _FILE_HEAD_V1.size  # 32
RECORD_HEADER_SIZE_V1 = _REC_HEAD_V1.size  # 9

REC_APPEND = 1
RECORD_TYPES = {REC_APPEND}


def wal_name(wal_id: int) -> str:
    return f"wal-{wal_id:08d}.log"


_REC_REST = struct.Struct("<IBQQI")  # the record header after its crc32
_CRC = struct.Struct("<I")


def record(payload: bytes, rec_type: int, seq: int, events_before: int, events: int) -> bytes:
    """One version-2 record (docs/format/wal.md, "Record"): the crc32 of the rest, then the
    rest (payload length, type, seq, events before it, its events) and the payload. The
    reference of `native_crc.record`, which gives identical bytes in one C call."""
    rest = _REC_REST.pack(len(payload), rec_type, seq, events_before, events)
    return b"".join((_CRC.pack(zlib.crc32(payload, zlib.crc32(rest))), rest, payload))


# What the writer calls: the compiled record builder when built (~0.4 us less per append).
RECORD = getattr(crc_many.KERNEL, "record", None) or record


def frame(rec_type: int, payload: bytes, seq: int, first_event: int, events: int) -> bytes:
    rest = _REC_REST.pack(len(payload), rec_type, seq, first_event, events)
    return b"".join((_CRC.pack(zlib.crc32(payload, zlib.crc32(rest))), rest, payload))


def file_header(wal_id: int, chunk: int, created_ns: int, mark: tuple[int, int, int]) -> bytes:
    head = _FILE_HEAD.pack(MAGIC, FORMAT_VERSION, 0, wal_id, created_ns, chunk, 0, *mark)
    return head + struct.pack("<II", zlib.crc32(head), 0)


def chunks_for(end: int, chunk: int) -> int:
    """The file size that keeps at least half a chunk of zeros after offset `end` (L2)."""
    need = end + chunk // 2
    return -(-need // chunk) * chunk


def create_wal(path: Path, wal_id: int, chunk: int = CHUNK) -> None:
    """Create an empty log: header and one zero-filled chunk, fsynced, with its directory
    entry."""
    try:
        fd = iofaults.open_fd(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            grow(fd, 0, chunks_for(FILE_HEADER_SIZE, chunk))
            iofaults.pwrite(fd, file_header(wal_id, chunk, time.time_ns(), (0, 0, 0)), 0)
            iofaults.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(path.parent)
    except OSError as exc:
        # Nothing refers to the new log yet: a failed creation leaves no file behind.
        path.unlink(missing_ok=True)
        raise iofaults.named(exc, path) from exc


_ZEROS = bytes(1 << 20)


def grow(fd: int, size: int, new_size: int) -> None:
    """Extend the file to `new_size` with written zeros (not a hole, not an unwritten extent:
    fdatasync of a later record then has no block allocation to persist). The size changes in
    one ftruncate first, so a crash mid-way still leaves a size that is a multiple of the
    chunk. The caller fsyncs."""
    iofaults.ftruncate(fd, new_size)
    pos = size
    while pos < new_size:
        pos += iofaults.pwrite(fd, memoryview(_ZEROS)[:min(len(_ZEROS), new_size - pos)], pos)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        iofaults.fsync(fd)
    except OSError as exc:
        raise iofaults.named(exc, path) from exc
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- reading a log
@dataclass(frozen=True)
class Record:
    offset: int
    rtype: int
    payload: bytes
    end: int  # offset just after the record: what "sealed through" offsets are compared with
    seq: int = 0  # version 2: 1, 2, 3, ... within one log (0 in a version-1 log)
    first_event: int = 0  # version 2: events in this log before this record
    events: int = 0  # version 2: events in this record


@dataclass
class LogProblem:
    """Acknowledged records missing or damaged: a byte range of the log, the sequence numbers
    and the events lost where the log or the manifest tells them (None: not knowable)."""

    path: str
    kind: str  # "damaged" (bad bytes between good records), "truncated", "header", "missing"
    start: int  # byte offset where the bad or missing range begins
    end: int | None  # where it ends (None: unknown, the log was cut)
    seq_first: int | None
    seq_last: int | None
    events: int | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "offset_start": self.start,
                "offset_end": self.end, "seq_first": self.seq_first, "seq_last": self.seq_last,
                "events": self.events, "error": self.describe()}

    def describe(self) -> str:
        where = f"bytes [{self.start}, {self.end if self.end is not None else '?'})"
        if self.seq_first is not None:
            last = self.seq_last if self.seq_last is not None else "?"
            where += f", records {self.seq_first}..{last}"
        lost = f", {self.events} events" if self.events is not None else ", events unknown"
        return f"log {self.kind}: {where}{lost}: {self.detail}"


@dataclass
class ScanResult:
    records: list[Record]
    end: int  # offset just after the last good record (where the writer continues)
    torn: bool  # bytes after `end` were a torn tail (a write in flight at a crash)
    size: int  # file size seen
    version: int = FORMAT_VERSION
    torn_bytes: int = 0
    problems: list[LogProblem] = field(default_factory=list)
    next_seq: int = 1  # version 2: the sequence number the next record gets
    events: int = 0  # version 2: events in this log up to `end`
    chunk: int = CHUNK
    mark: tuple[int, int, int] | None = None  # (end, seq, events) the header says were synced


def read_header(path: Path) -> tuple[int, int]:
    """(version, wal_id) of a log file."""
    with open(path, "rb") as fh:
        head = fh.read(FILE_HEADER_SIZE_V1)
    if len(head) < FILE_HEADER_SIZE_V1 or head[:4] != MAGIC:
        raise CorruptionError(f"{path}: not a SeqVault log (bad magic)", path=str(path))
    magic, version, _r, wal_id, _ns, _r2 = _FILE_HEAD_V1.unpack(head)
    return int(version), int(wal_id)


def nothing_after(path: Path, start: int) -> bool:
    """Whether a version-2 log has no record at `start` (a zero header there: the writer has
    not written one yet). FileNotFoundError: the log is gone."""
    fd = os.open(path, os.O_RDONLY)
    try:
        peek = os.pread(fd, RECORD_HEADER_SIZE, start)
    finally:
        os.close(fd)
    return len(peek) == RECORD_HEADER_SIZE and not peek.strip(b"\0")


def scan(path: Path, start: int = 0, *, expect_id: int | None = None,
         synced: tuple[int, int, int] | None = None) -> ScanResult:
    """Read every whole, checksummed record from `start` (0: the whole log, header checked).

    Never raises on damage: a torn tail comes back as ``torn``, acknowledged records missing or
    damaged as ``problems`` (rules L1-L6 of docs/format/wal.md). Raises CorruptionError for the
    wrong file (R4) and FormatVersionError for a newer version (R5). `synced`: (end, seq,
    events) the manifest recorded as synced at its last commit for this log.
    """
    with open(path, "rb") as fh:
        head = fh.read(FILE_HEADER_SIZE)
        if len(head) < FILE_HEADER_SIZE_V1:  # cut inside the header (L3)
            cut = LogProblem(str(path), "truncated", 0, None, None, None, None,
                             f"the log is cut inside its header ({len(head)} bytes)")
            return ScanResult([], len(head), False, len(head), problems=[cut])
        magic, version, _r, wal_id, _ns, _r2 = _FILE_HEAD_V1.unpack_from(head, 0)
        if magic != MAGIC:
            raise CorruptionError(f"{path}: bad log magic {magic!r}", path=str(path))
        if version > FORMAT_VERSION:
            raise FormatVersionError(f"{path}: log format version {version} is newer than this "
                                     f"SeqVault reads ({FORMAT_VERSION})")
        if version == 1:
            base = max(start, FILE_HEADER_SIZE_V1)
        else:
            base = max(start, FILE_HEADER_SIZE)
        fh.seek(base)
        data = fh.read()
    head_ok = version == 1 or (len(head) == FILE_HEADER_SIZE and zlib.crc32(
        head[:_FILE_HEAD.size]) == struct.unpack_from("<I", head, _FILE_HEAD.size)[0])
    if start <= FILE_HEADER_SIZE and expect_id is not None and wal_id != expect_id and head_ok:
        raise CorruptionError(f"{path}: log id {wal_id}, catalog expects {expect_id}",
                              path=str(path))
    if version == 1:
        return _scan_v1(path, data, base, base + len(data))
    return _scan_v2(path, head, data, base, base + len(data), synced)


def _scan_v1(path: Path, data: bytes, base: int, size: int) -> ScanResult:
    """Version 1 (no chunks, no sequence numbers): rules R1-R3 of wal.md "Version 1". A bad
    record followed by more non-zero data is reported as damage up to the end of the file."""
    records: list[Record] = []
    view = memoryview(data)
    i = 0
    n = len(data)
    while i < n:
        problem = None
        if n - i < RECORD_HEADER_SIZE_V1:
            problem = "short record header"
            rec_end = n + 1
        else:
            length, crc, rtype = _REC_HEAD_V1.unpack_from(data, i)
            rec_end = i + RECORD_HEADER_SIZE_V1 + length
            if length > MAX_RECORD or rec_end > n:
                problem = f"record length {length} runs past the end of the file"
                rec_end = max(rec_end, n + 1)
            else:
                payload = view[i + RECORD_HEADER_SIZE_V1:rec_end]
                if zlib.crc32(payload, zlib.crc32(bytes([rtype]))) != crc:
                    problem = "record checksum mismatch"
                elif rtype not in RECORD_TYPES:
                    problem = f"unknown record type {rtype}"
        if problem is None:
            records.append(Record(base + i, rtype, bytes(payload), base + rec_end))
            i = rec_end
            continue
        if rec_end >= n or not data[i:].rstrip(b"\0"):  # R1/R2: a torn tail
            return ScanResult(records, base + i, True, size, 1, size - base - i)
        bad = LogProblem(str(path), "damaged", base + i, size, None, None, None,
                         f"{problem}, with {n - rec_end} bytes of later records behind it "
                         "(a version-1 log: records after it are not numbered)")
        return ScanResult(records, base + i, False, size, 1, problems=[bad])
    return ScanResult(records, base + i, False, size, 1)


def _parse(data: bytes, i: int, base: int) -> Record | None:
    """The record starting at index `i` of `data`, if its header and checksum check."""
    if i + RECORD_HEADER_SIZE > len(data):
        return None
    crc, length, rtype, seq, first, n = _REC_HEAD.unpack_from(data, i)
    j = i + RECORD_HEADER_SIZE + length
    if length == 0 or length > MAX_RECORD or rtype not in RECORD_TYPES or j > len(data):
        return None
    if zlib.crc32(memoryview(data)[i + 4:j]) != crc:
        return None
    return Record(base + i, rtype, data[i + RECORD_HEADER_SIZE:j], base + j, seq, first, n)


def _resync(data: bytes, i: int, base: int, expect: int | None) -> Record | None:
    """The next valid record starting after index `i` (after damage): candidates are positions
    whose type byte is a known type and whose sequence number could follow `expect`."""
    top = (expect or 1) + len(data) // RECORD_HEADER_SIZE + 1
    k = i + 1 + 8  # the type byte sits 8 bytes into a header
    while True:
        k = data.find(bytes([REC_APPEND]), k)
        if k < 0:
            return None
        p = k - 8
        k += 1
        seq = int.from_bytes(data[p + 9:p + 17], "little")
        if (expect is not None and seq < expect) or not 1 <= seq <= top:
            continue
        rec = _parse(data, p, base)
        if rec is not None:
            return rec


def _scan_v2(path: Path, head: bytes, data: bytes, base: int, size: int,
             synced: tuple[int, int, int] | None) -> ScanResult:
    problems: list[LogProblem] = []
    where = str(path)
    chunk = CHUNK
    mark: tuple[int, int, int] | None = None
    if len(head) < FILE_HEADER_SIZE:
        problems.append(LogProblem(where, "truncated", 0, None, None, None, None,
                                   f"the log is cut inside its header ({len(head)} bytes)"))
    else:
        fields = _FILE_HEAD.unpack_from(head, 0)
        (crc,) = struct.unpack_from("<I", head, _FILE_HEAD.size)
        if zlib.crc32(head[:_FILE_HEAD.size]) != crc:
            problems.append(LogProblem(where, "header", 0, FILE_HEADER_SIZE, None, None, None,
                                       "log header checksum mismatch (its synced mark and chunk "
                                       "size are unknown)"))
            if 4096 <= fields[5] <= (1 << 30) and fields[5] & (fields[5] - 1) == 0:
                chunk = int(fields[5])
        else:
            chunk = int(fields[5])
            if fields[7]:
                mark = (int(fields[7]), int(fields[8]), int(fields[9]))
    records: list[Record] = []
    expect: int | None = 1 if base <= FILE_HEADER_SIZE else None
    events: int | None = 0 if base <= FILE_HEADER_SIZE else None
    i = 0
    tail_start: int | None = None  # index of bytes after the last good record that are not zero
    while True:
        rec = _parse(data, i, base)
        if rec is None:
            if not data[i:].rstrip(b"\0"):
                break  # only zeros follow: the end of the log
            rec = _resync(data, i, base, expect)
            if rec is None:
                tail_start = i
                break
            lost = (rec.first_event - events) if events is not None else None
            problems.append(LogProblem(
                where, "damaged", base + i, rec.offset, expect, rec.seq - 1, lost,
                "bad record (header or checksum) followed by valid records"))
        elif expect is not None and rec.seq != expect:
            problems.append(LogProblem(
                where, "damaged", rec.offset, rec.offset, expect, rec.seq - 1,
                (rec.first_event - events) if events is not None else None,
                f"record {rec.seq} follows record {expect - 1}: records are missing"))
        records.append(rec)
        i = rec.end - base
        expect = rec.seq + 1
        events = rec.first_event + rec.events
    end = base + i
    nonzero_end = end if tail_start is None else end + len(data[i:].rstrip(b"\0"))
    result = ScanResult(records, end, False, size, FORMAT_VERSION, problems=problems,
                        next_seq=expect or 1, events=events or 0, chunk=chunk, mark=mark)
    # What the log (header mark) or the manifest (last commit) says was synced: records up to
    # there were acknowledged, so none of them may be missing or bad.
    # By sequence number where known (a gap already reported moved later records up).
    claims = [c for c in (mark, synced) if c is not None and c[0] > end
              and (expect is None or c[1] >= expect)]
    acked = max(claims) if claims else None
    cut = []
    if size % chunk:
        cut.append(f"the file size {size} is not a multiple of the chunk size {chunk}")
    elif nonzero_end > size - chunk // 2:
        cut.append(f"data reaches offset {nonzero_end}, inside the final half-chunk "
                   f"[{size - chunk // 2}, {size}) that the writer keeps zero")
    torn_shape = tail_start is not None and _torn_shape(data, i, expect, nonzero_end - base)
    if not cut and acked is None and (tail_start is None or torn_shape):
        if tail_start is not None:  # L1: a record in flight at a crash, never acknowledged
            result.torn = True
            result.torn_bytes = nonzero_end - end
        return result
    seq_last = acked[1] if acked is not None and (expect is None or acked[1] >= expect) else None
    lost = (acked[2] - events) if acked is not None and events is not None else None
    if cut:
        detail = "the log was cut: " + "; ".join(cut)
        if acked is not None:
            detail += f"; records through offset {acked[0]} were synced"
        problems.append(LogProblem(where, "truncated", end, acked[0] if acked else None,
                                   expect, seq_last, lost, detail))
    else:
        detail = ("bad bytes after the last good record" if tail_start is not None
                  else "the log ends early")
        if acked is not None:
            detail += f"; records through offset {acked[0]} were synced"
        if tail_start is not None and not torn_shape:
            detail += "; they are not one partly written record"
        problems.append(LogProblem(where, "damaged", end,
                                   max(nonzero_end, acked[0] if acked else 0), expect, seq_last,
                                   lost, detail))
    return result


def _torn_shape(data: bytes, i: int, expect: int | None, nonzero: int) -> bool:
    """Whether the non-zero bytes from index `i` to `nonzero` can be one record cut short by a
    crash: a header with the expected sequence number and the bytes within its length, or a
    header cut short itself."""
    if nonzero - i <= RECORD_HEADER_SIZE:
        return True
    _crc, length, _t, seq, _f, _n = _REC_HEAD.unpack_from(data, i)
    if expect is not None and seq != expect:
        return False
    return nonzero <= i + RECORD_HEADER_SIZE + length


def staged(path: Path, wal_id: int, at: LogPosition) -> list[tuple[Record, bytes]]:
    """The records a `batch` writer staged in the log's ring past `at` (the end of the
    log's good records, with the next seq and the events before it), with each record's
    bytes: rule G4 of docs/format/ring.md. Only for a log whose scan found no problem."""
    found = ring_mod.continuation(path, wal_id, at.end, at.next_seq, at.events, RECORD_TYPES)
    return [(Record(off, rtype, payload, end), raw)
            for off, rtype, payload, end, _n, raw in found]


def take_staged(result: ScanResult, found: list[tuple[Record, bytes]]) -> None:
    """Add staged records to a scan's result, as if the log held them."""
    for rec, raw in found:
        result.records.append(rec)
        result.events += _REC_HEAD.unpack_from(raw, 0)[5]
        result.next_seq += 1
        result.end = rec.end


def iter_payloads(result: ScanResult) -> Iterator[bytes]:
    for rec in result.records:
        if rec.rtype == REC_APPEND:
            yield rec.payload


# ---------------------------------------------------------------------- writing a log
@dataclass(frozen=True)
class LogPosition:
    """Where a log's records end: byte offset, the next record's sequence number, events so
    far. What the writer continues from, and what it reports as synced."""

    end: int = FILE_HEADER_SIZE
    next_seq: int = 1
    events: int = 0


_now = time.monotonic  # the mark's clock (a test may replace it)


def _open_ring(path: Path, wal_id: int) -> ring_mod.Ring | None:
    """A fresh ring for the log (recovery has copied any earlier one's records into the
    log), or None where it cannot be made (a full disk): records then go by pwrite."""
    where = ring_mod.ring_path(path)
    try:
        ring_mod.create(where, wal_id)
        return ring_mod.Ring(where, wal_id)
    except (OSError, ValueError):
        where.unlink(missing_ok=True)
        return None


def _armed() -> bool:
    """A test armed the log's writes (seqvault.faults): records then go by `iofaults.pwrite`,
    whose failures the fault tests inject, never through the ring or the compiled call."""
    return iofaults.pwrite is not os.pwrite


class WalWriter:
    """Appends records to one version-2 log file with the chosen durability, thread-safe.

    `at`: where the records end (from recovery's scan; a new log: right after the header).
    """

    def __init__(self, path: Path, durability: str, *, batch_interval: float = 0.005,
                 at: LogPosition | None = None) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability: {durability!r} is not one of {DURABILITY_MODES}")
        self.path = path
        self.durability = durability
        self.batch_interval = batch_interval
        self._fd = iofaults.open_fd(path, os.O_RDWR)
        head = os.pread(self._fd, FILE_HEADER_SIZE, 0)
        fields = _FILE_HEAD.unpack_from(head, 0)
        self._wal_id, self._created, self.chunk = int(fields[3]), int(fields[4]), int(fields[5])
        self._size = os.fstat(self._fd).st_size
        at = at or LogPosition()
        self._end, self._seq, self._events = at.end, at.next_seq, at.events
        self._synced = at  # what an fsync covered (all of it, at open: recovery read it back)
        self._marked = (int(fields[7]), int(fields[8]), int(fields[9]))
        self._mark_due = 0.0  # when an fsync next rewrites the mark (MARK_INTERVAL)
        self._write_lock = threading.Lock()
        self._grow_lock = threading.Lock()  # taken inside the write lock, never around it
        self._sync_lock = threading.Lock()
        self._closed = False
        self._wake = threading.Event()
        self._hurry = threading.Event()  # `sync_soon`: the flusher skips its batch wait
        self._flusher: threading.Thread | None = None
        self.fsyncs = 0
        self.extensions = 0
        self.failed: OSError | None = None  # fail-stop: set by the first failed write/fsync
        # `batch` stages records in a ring (seqvault/ring.py, docs/format/ring.md): the log
        # file holds the records up to `_copied`, the ring those from there to `_end`.
        self._copied = self._end
        self.ring: ring_mod.Ring | None = None
        if durability == "batch" and ring_mod.wanted(path):
            self.ring = _open_ring(path, self._wal_id)
        if durability == "batch":
            self._flusher = threading.Thread(target=self._batch_loop, name="seqvault-wal-sync",
                                             daemon=True)
            self._flusher.start()

    @property
    def size(self) -> int:
        """The end of the records (not the preallocated file size)."""
        return self._end

    @property
    def synced(self) -> LogPosition:
        return self._synced

    def append(self, payload: bytes, rec_type: int = REC_APPEND, *, events: int = 0) -> int:
        """Write one record of `events` events; returns the log offset just after it. Does not
        wait for fsync."""
        with self._write_lock:
            if self.failed is not None:
                self.check()
            rec = RECORD(payload, rec_type, self._seq, self._events, events)
            end = self._end + len(rec)
            try:
                if end + self.chunk // 2 > self._size:
                    self._extend(end)  # also for a staged record: G3 copies it out later
                ring = self.ring
                if (ring is not None and len(rec) <= ring_mod.RECORD_MAX
                        and end - self._copied <= ring.size and not _armed()):
                    ring.store(self._end, rec)  # rule G1/G2
                else:
                    self._copy_out()  # the log stays a prefix of the records (G3)
                    written = iofaults.pwrite(self._fd, rec, self._end)
                    if written != len(rec):
                        raise OSError(f"short write to {self.path}: {written} of {len(rec)} "
                                      "bytes")
                    self._copied = end
            except OSError as exc:
                self.failed = exc
                raise WriterFailed(f"{self.path}: writing the log failed ({exc}); nothing more "
                                   "is acknowledged: reopen the store") from exc
            self._end = end
            self._seq += 1
            self._events += events
        if self.durability == "batch" and not self._wake.is_set():
            self._wake.set()  # Event.set takes a lock and notifies: skip it when already set
        return end

    def append_call(self, call: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """`call(*args, log)` under the write lock, `log` being (fd, end, seq, events before,
        the last offset a record may end at): the compiled `append_call`, which writes one
        append record at `end` itself (native_append.c). Returns what it returns, after
        taking its record into the log's state, or None, with nothing written: the call was
        not a plain case, the log must grow first, or a test armed the log's writes (faults),
        so the caller takes the Python path, whose `append` does each of these."""
        with self._write_lock:
            if self.failed is not None:
                self.check()
            if iofaults.pwrite is not os.pwrite:  # _armed(), without the call
                return None
            ring = self.ring
            log = (self._fd, self._end, self._seq, self._events, self._size - self.chunk // 2,
                   None if ring is None else ring.map, 0 if ring is None else ring.size,
                   self._copied + (0 if ring is None else ring.size))
            try:
                got: tuple[Any, ...] | None = call(*args, log)
            except OSError as exc:
                self.failed = exc
                raise WriterFailed(f"{self.path}: writing the log failed ({exc}); nothing more "
                                   "is acknowledged: reopen the store") from exc
            if got is None:
                return None
            self._end = got[0]
            if ring is None:
                self._copied = self._end
            self._seq += 1
            self._events += got[1]
        if self.durability == "batch" and not self._wake.is_set():
            self._wake.set()
        return got

    def _copy_out(self) -> None:
        """Write the staged records [_copied, _end) into the log in one pwrite (rule G3): the
        flusher's round before its fdatasync, and any record that cannot be staged before it
        is written itself. holds: the write lock."""
        if self.ring is None or self._copied >= self._end:
            return
        data = self.ring.read(self._copied, self._end)
        written = iofaults.pwrite(self._fd, data, self._copied)
        if written != len(data):
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        self._copied = self._end

    def _extend(self, end: int) -> None:
        """Grow the file so at least half a chunk of zeros follows `end` (rule L2), and a few
        chunks more so that the next appends need not grow it again, durable before any record
        enters the new chunks. holds: the write lock."""
        with self._grow_lock:
            if end + self.chunk // 2 <= self._size:
                return  # the flusher grew it meanwhile
            new_size = chunks_for(end + (AHEAD_CHUNKS - 1) * self.chunk, self.chunk)
            grow(self._fd, self._size, new_size)
            iofaults.fsync(self._fd)  # the new size too, not only the data
            self._size = new_size
            self.extensions += 1

    def _grow_ahead(self) -> None:
        """`batch`'s flusher: grow the file while less than `AHEAD_CHUNKS` chunks of zeros
        follow the records, so that appends seldom wait for a zero-fill and its fsync themselves
        (docs/design/realtime.md, "Append kernel"). Writers only write below `_size - chunk/2`,
        so the zeros are written and fsynced beyond any record, without the write lock; the new
        size is published only after its fsync (rule L2 holds as in `_extend`)."""
        with self._grow_lock:
            ahead = AHEAD_CHUNKS * self.chunk
            if self._closed or self.failed is not None or self._end + ahead <= self._size:
                return
            new_size = chunks_for(self._end + ahead, self.chunk)
            try:
                grow(self._fd, self._size, new_size)
                iofaults.fsync(self._fd)
            except OSError as exc:
                self.failed = exc
                raise
            self._size = new_size
            self.extensions += 1

    def commit(self, end: int) -> None:
        """Make the record ending at `end` as durable as the mode promises before returning."""
        if self.durability == "sync":
            self.sync_to(end)

    def sync_to(self, end: int) -> None:
        if self._synced.end >= end:
            return
        with self._sync_lock:  # group commit: waiters find their bytes already synced
            if self._synced.end >= end:
                return
            self.check()
            try:
                with self._write_lock:
                    self._copy_out()
                    target = LogPosition(self._end, self._seq, self._events)
                # The header mark says what the *previous* fsync covered: written before this
                # fsync, it must not claim records this fsync may not have made durable yet.
                # Rewritten only every MARK_INTERVAL: a second page for each fsync to write.
                if _now() >= self._mark_due:
                    self._write_mark(self._synced)
                iofaults.fdatasync(self._fd)
            except OSError as exc:
                self.failed = exc
                raise WriterFailed(f"{self.path}: fsync of the log failed ({exc}); nothing more "
                                   "is acknowledged: reopen the store") from exc
            self.fsyncs += 1
            if target.end > self._synced.end:
                self._synced = target

    def _write_mark(self, pos: LogPosition) -> None:
        mark = (pos.end, pos.next_seq - 1, pos.events)
        if mark == self._marked or pos.end <= FILE_HEADER_SIZE:
            return
        iofaults.pwrite(self._fd, file_header(self._wal_id, self.chunk, self._created, mark), 0)
        self._marked = mark
        self._mark_due = _now() + MARK_INTERVAL

    def sync(self) -> None:
        self.sync_to(self._end)

    def sync_soon(self) -> None:
        """Have `batch`'s flusher fsync what is written so far now, not after its
        `batch_interval`, without waiting for it. A partial seal calls it before it encodes and
        `sync_to` before it commits: the log's fdatasync (~0.5 ms on the 16-core machine) then
        runs while the seal encodes, both outside the GIL, and `sync_to` finds it done or
        waits for the rest (docs/design/realtime.md, "The seal's log sync overlapped"). Other
        modes: nothing here (`sync` has synced every record already; `none` syncs in the
        caller's `sync_to`)."""
        if self._flusher is not None and self._synced.end < self._end:
            self._hurry.set()
            self._wake.set()

    def check(self) -> None:
        if self.failed is not None:
            raise WriterFailed(f"{self.path}: an earlier write or fsync of the log failed "
                               f"({self.failed}); nothing more is acknowledged: reopen the store")

    def _batch_loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                break
            if not self._hurry.is_set():
                self._hurry.wait(self.batch_interval)  # a `sync_soon` cuts the wait short
            # A `sync_soon` after this clear is covered by the sync below, which syncs
            # everything written before it started.
            self._hurry.clear()
            try:
                self.sync()
                self._grow_ahead()
            except (OSError, WriterFailed):
                break  # fail-stop: `failed` is set; appends refuse from now on

    def close(self, *, sync: bool = True) -> None:
        """Close the file, after an fsync unless `sync` is False (the store failed: nothing
        more is written). A clean close leaves the header mark covering every record."""
        if self._closed:
            return
        try:
            if sync and self.failed is None:
                self.sync()
                with self._sync_lock:
                    if self._marked[0] != self._synced.end:
                        try:
                            self._write_mark(self._synced)
                            iofaults.fdatasync(self._fd)
                        except OSError as exc:
                            # Every record was synced above; only the mark is not durable,
                            # which the next open tolerates (it lags one fsync, rule L4).
                            self.failed = exc
                            raise iofaults.named(exc, self.path) from exc
        finally:
            self._closed = True
            self._hurry.set()
            self._wake.set()
            if self._flusher is not None:
                self._flusher.join(timeout=2)
            os.close(self._fd)
            if self.ring is not None:
                self.ring.close()
                if sync and self.failed is None and self._copied == self._end:
                    # every record is in the log and synced: a clean store has no ring (G5)
                    self.ring.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- the append record
# One REC_APPEND payload (docs/format/wal.md, "Append record"): a msgpack map
# {"v": schema version, "k": [user keys], "n": [events per user], "t": int64 LE timestamps,
#  "c": {column: LE array bytes | list of str}}; rows are grouped by user in "k" order.


def encode_append(schema: Schema, keys: list[Any], counts: list[int], ts: np.ndarray,
                  cols: dict[str, np.ndarray]) -> bytes:
    enc: dict[str, Any] = {}
    for c in schema.columns:
        arr = cols[c.name]
        enc[c.name] = arr.tolist() if c.is_string else arr.astype(
            c.dtype.newbyteorder("<"), copy=False).tobytes()
    return msgpack.packb({"v": schema.version, "k": keys, "n": counts,
                          "t": ts.astype("<i8", copy=False).tobytes(), "c": enc},
                         use_bin_type=True)


def decode_append(schema: Schema, payload: bytes
                  ) -> tuple[list[Any], list[int], np.ndarray, dict[str, np.ndarray]]:
    """(keys, counts, ts, columns); string columns as object arrays of str; a column added
    after the record was written reads back its default."""
    rec = msgpack.unpackb(payload, raw=False)
    ts = np.frombuffer(rec["t"], dtype="<i8").astype(np.int64)
    cols: dict[str, np.ndarray] = {}
    for c in schema.columns:
        raw = rec["c"].get(c.name)
        if raw is None:
            cols[c.name] = np.full(ts.size, c.default, dtype=object if c.is_string else c.dtype)
        elif c.is_string:
            cols[c.name] = np.array(raw, dtype=object)
        else:
            cols[c.name] = np.frombuffer(raw, dtype=c.dtype.newbyteorder("<")).astype(c.dtype)
    return rec["k"], rec["n"], ts, cols
