"""Write-ahead log: CRC-framed records, group commit, torn-tail recovery.

Format in docs/format/wal.md. Each append call becomes exactly one record written with one
``write()``, so a record is either wholly in the file or is the torn tail. Durability modes:

* ``sync``  — the call returns after fsync covers its record. Concurrent callers share fsyncs
  (group commit: whoever fsyncs first covers everything written before it).
* ``batch`` — the call returns after ``write()``; a background thread fsyncs at most every
  ``batch_interval`` seconds (default 5 ms). A process crash loses nothing (the bytes are in the
  OS page cache); a power loss may lose the last few milliseconds.
* ``none``  — ``write()`` only; the OS decides when the bytes reach the disk.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from . import iofaults
from .errors import CorruptionError, FormatVersionError, WriterFailed
from .schema import Schema
from .settings import DURABILITY_MODES

MAGIC = b"SVWL"
FORMAT_VERSION = 1
_FILE_HEAD = struct.Struct("<4sHHQQQ")  # magic, version, reserved, wal_id, created_ns, reserved
_REC_HEAD = struct.Struct("<IIB")  # payload length, crc32(type + payload), type
FILE_HEADER_SIZE = _FILE_HEAD.size  # 32
RECORD_HEADER_SIZE = _REC_HEAD.size  # 9
MAX_RECORD = 1 << 30

REC_APPEND = 1
RECORD_TYPES = {REC_APPEND}


def wal_name(wal_id: int) -> str:
    return f"wal-{wal_id:08d}.log"


def frame(rec_type: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes([rec_type])))
    return _REC_HEAD.pack(len(payload), crc, rec_type) + payload


def create_wal(path: Path, wal_id: int) -> None:
    """Create an empty log file (header only), fsynced, with its directory entry."""
    head = _FILE_HEAD.pack(MAGIC, FORMAT_VERSION, 0, wal_id, time.time_ns(), 0)
    try:
        fd = iofaults.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            iofaults.write(fd, head)
            iofaults.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(path.parent)
    except OSError as exc:
        # Nothing refers to the new log yet: a failed creation leaves no file behind.
        path.unlink(missing_ok=True)
        raise iofaults.named(exc, path) from exc


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        iofaults.fsync(fd)
    except OSError as exc:
        raise iofaults.named(exc, path) from exc
    finally:
        os.close(fd)


@dataclass
class ScanResult:
    records: list[tuple[int, int, bytes]]  # (offset, type, payload)
    end: int  # offset just after the last good record
    torn: bool  # bytes after `end` were a torn tail
    size: int  # file size seen


def scan(path: Path, start: int = FILE_HEADER_SIZE, *, expect_id: int | None = None) -> ScanResult:
    """Read every whole, checksummed record from `start`.

    A bad record at the end of the file (length reaching past EOF, checksum mismatch on the last
    record, or a zero-filled tail) is a *torn tail*: it was never acknowledged, and is reported
    with ``torn=True``. A bad record followed by more data is corruption: acknowledged records
    may lie behind it, so we refuse (CorruptionError) rather than silently drop them.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    size = len(data)
    if start == FILE_HEADER_SIZE or start == 0:
        if size < FILE_HEADER_SIZE:
            raise CorruptionError(f"{path}: log header is torn ({size} bytes)", path=str(path))
        magic, version, _r, wal_id, _ns, _r2 = _FILE_HEAD.unpack_from(data, 0)
        if magic != MAGIC:
            raise CorruptionError(f"{path}: bad log magic {magic!r}", path=str(path))
        if version > FORMAT_VERSION:
            raise FormatVersionError(f"{path}: log format version {version} is newer than this "
                                     f"SeqVault reads ({FORMAT_VERSION})")
        if expect_id is not None and wal_id != expect_id:
            raise CorruptionError(f"{path}: log id {wal_id}, catalog expects {expect_id}",
                                  path=str(path))
        start = FILE_HEADER_SIZE
    records: list[tuple[int, int, bytes]] = []
    pos = start
    view = memoryview(data)
    while pos < size:
        problem = None
        if size - pos < RECORD_HEADER_SIZE:
            problem = "short record header"
            rec_end = size + 1
        else:
            length, crc, rtype = _REC_HEAD.unpack_from(data, pos)
            rec_end = pos + RECORD_HEADER_SIZE + length
            if length > MAX_RECORD or rec_end > size:
                problem = f"record length {length} runs past the end of the file"
                rec_end = max(rec_end, size + 1)
            else:
                payload = view[pos + RECORD_HEADER_SIZE : rec_end]
                if zlib.crc32(payload, zlib.crc32(bytes([rtype]))) != crc:
                    problem = "record checksum mismatch"
                elif rtype not in RECORD_TYPES:
                    problem = f"unknown record type {rtype}"
        if problem is None:
            records.append((pos, rtype, bytes(payload)))
            pos = rec_end
            continue
        # Torn tail: the bad record reaches the end of the file, or only zeros follow it
        # (file systems can leave a zero-filled page after a crash).
        if rec_end >= size or not any(view[pos:]):
            return ScanResult(records, pos, True, size)
        raise CorruptionError(
            f"{path}: {problem} at offset {pos}, with {size - rec_end} bytes of later records "
            "behind it; refusing to drop acknowledged writes (run `seqvault verify`)",
            path=str(path),
        )
    return ScanResult(records, pos, False, size)


def iter_payloads(result: ScanResult) -> Iterator[bytes]:
    for _off, rtype, payload in result.records:
        if rtype == REC_APPEND:
            yield payload


class WalWriter:
    """Appends records to one log file with the chosen durability, thread-safe."""

    def __init__(self, path: Path, durability: str, *, batch_interval: float = 0.005) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability: {durability!r} is not one of {DURABILITY_MODES}")
        self.path = path
        self.durability = durability
        self.batch_interval = batch_interval
        self._fd = iofaults.open_fd(path, os.O_WRONLY | os.O_APPEND)
        self._end = os.fstat(self._fd).st_size
        self._synced = self._end
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._closed = False
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self.fsyncs = 0
        self.failed: OSError | None = None  # fail-stop: set by the first failed write/fsync
        if durability == "batch":
            self._flusher = threading.Thread(target=self._batch_loop, name="seqvault-wal-sync",
                                             daemon=True)
            self._flusher.start()

    @property
    def size(self) -> int:
        return self._end

    def append(self, payload: bytes, rec_type: int = REC_APPEND) -> int:
        """Write one record; returns the log offset just after it. Does not wait for fsync."""
        rec = frame(rec_type, payload)
        with self._write_lock:
            self.check()
            try:
                written = iofaults.write(self._fd, rec)
                if written != len(rec):  # O_APPEND regular files write whole; guard anyway
                    raise OSError(f"short write to {self.path}: {written} of {len(rec)} bytes")
            except OSError as exc:
                self.failed = exc
                raise WriterFailed(f"{self.path}: writing the log failed ({exc}); nothing more "
                                   "is acknowledged: reopen the store") from exc
            self._end += written
            end = self._end
        if self.durability == "batch" and not self._wake.is_set():
            self._wake.set()  # Event.set takes a lock and notifies: skip it when already set
        return end

    def commit(self, end: int) -> None:
        """Make the record ending at `end` as durable as the mode promises before returning."""
        if self.durability == "sync":
            self.sync_to(end)

    def sync_to(self, end: int) -> None:
        if self._synced >= end:
            return
        with self._sync_lock:  # group commit: waiters find their bytes already synced
            if self._synced >= end:
                return
            self.check()
            target = self._end
            try:
                iofaults.fsync(self._fd)
            except OSError as exc:
                self.failed = exc
                raise WriterFailed(f"{self.path}: fsync of the log failed ({exc}); nothing more "
                                   "is acknowledged: reopen the store") from exc
            self.fsyncs += 1
            self._synced = max(self._synced, target)

    def sync(self) -> None:
        self.sync_to(self._end)

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
            time.sleep(self.batch_interval)
            try:
                self.sync()
            except (OSError, WriterFailed):
                break  # fail-stop: `failed` is set; appends refuse from now on

    def close(self, *, sync: bool = True) -> None:
        """Close the file, after an fsync unless `sync` is False (the store failed: nothing
        more is written)."""
        if self._closed:
            return
        try:
            if sync and self.failed is None:
                self.sync()
        finally:
            self._closed = True
            self._wake.set()
            if self._flusher is not None:
                self._flusher.join(timeout=2)
            os.close(self._fd)


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
