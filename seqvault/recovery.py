"""Opening a store: the writer lock, creation, repair of a crashed writer's leftovers, and log
replay (docs/format/manifest.md, "Recovery"; docs/format/wal.md, "Recovery")."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from . import iofaults
from . import wal as wal_mod
from .errors import CorruptionError, StoreLocked
from .files import file_name, parse_file_name
from .index import user_hash
from .manifest import Manifest
from .memtable import MemTable, StringDict
from .schema import Schema
from .segment import key_bytes

SPILL_PREFIX = "tmp-ingest-"  # seqvault/ingest/spill.py's TMP_PREFIX


def take_lock(root: Path) -> int:
    """The writer lock (flock on LOCK, holding our pid for the error message of the next one)."""
    fd = os.open(root / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 64, 0).decode().strip()
        finally:
            os.close(fd)
        pid = int(holder) if holder.isdigit() else None
        raise StoreLocked(f"{root} is open for writing by another process (pid {holder or '?'}); "
                          "open it with read_only=True, or stop that process", pid=pid) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def create_store(root: Path, schema: Schema, settings: dict[str, Any]) -> None:
    for sub in ("wal", "data", "meta"):
        (root / sub).mkdir(exist_ok=True)
    wal_mod.create_wal(root / "wal" / wal_mod.wal_name(1), 1)
    Manifest.create(root, schema, settings)


def repair(root: Path, manifest: Manifest) -> None:
    """Writer open, lock held: undo what a crashed writer left unpublished.

    Extent files: cut tails past the published size, delete files no commit refers to.
    Logs other than the current one (a flush that crashed before or after its commit), spill
    directories of a dead ingest, checkpoint files no commit refers to: deleted.
    """
    data = root / "data"
    catalog = manifest.catalog
    for p in data.iterdir():
        parsed = parse_file_name(p.name)
        if parsed is None:
            continue
        info = catalog.get(parsed[1])
        if info is None:
            p.unlink()
            continue
        size = p.stat().st_size
        if size > info.size:
            cut(p, info.size)
        elif size < info.size:
            raise CorruptionError(f"{p}: file has {size} bytes, the catalog published "
                                  f"{info.size}; data was lost below SeqVault", path=str(p))
    for fid, info in catalog.items():
        if info.size > 0 and not (data / file_name(info.kind, fid)).exists():
            raise CorruptionError(f"{data / file_name(info.kind, fid)}: file in the catalog "
                                  "is missing", path=str(data))
    for tmp in root.glob(f"{SPILL_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    current = wal_mod.wal_name(manifest.wal_id)
    for p in (root / "wal").iterdir():
        if p.name != current and p.name.startswith("wal-"):
            p.unlink()
    manifest.remove_stale_checkpoints()


def cut(path: Path, size: int) -> None:
    """Truncate `path` to `size`, durably. A failure names the file (the kernel does not: a
    disk-full or I/O error at open must say where; docs/design/safety.md, section 9)."""
    try:
        with open(path, "r+b") as fh:
            iofaults.ftruncate(fh.fileno(), size)
            iofaults.fsync(fh.fileno())
    except OSError as exc:
        raise iofaults.named(exc, path) from exc


def recover_log(root: Path, wal_id: int, schema: Schema, mem: MemTable,
                dicts: dict[str, StringDict], sealed: dict[int, int]) -> tuple[int, int, int]:
    """Writer open: replay the current log into the memtable; cut a torn tail (never
    acknowledged: an acknowledged record is whole) so appends continue from a clean end.
    Returns (log end, events recovered, torn bytes cut)."""
    path = root / "wal" / wal_mod.wal_name(wal_id)
    if not path.exists():
        raise CorruptionError(f"{path}: the current write-ahead log is missing; acknowledged "
                              "writes may be lost", path=str(path))
    result = wal_mod.scan(path, expect_id=wal_id)
    torn = 0
    if result.torn:
        torn = result.size - result.end
        cut(path, result.end)
    events = _apply(result, schema, mem, dicts, sealed)
    return result.end, events, torn


def replay_log(root: Path, wal_id: int, start: int, schema: Schema, mem: MemTable,
               dicts: dict[str, StringDict], sealed: dict[int, int]) -> int:
    """Read-only opens: apply the log's whole records from `start`; returns the new position.
    FileNotFoundError: the writer rotated the log (the caller takes a new snapshot)."""
    path = root / "wal" / wal_mod.wal_name(wal_id)
    if not path.exists():
        raise FileNotFoundError(path)
    if path.stat().st_size <= start:
        return start
    result = wal_mod.scan(path, start,
                          expect_id=wal_id if start == wal_mod.FILE_HEADER_SIZE else None)
    _apply(result, schema, mem, dicts, sealed)
    return result.end


def _apply(result: wal_mod.ScanResult, schema: Schema, mem: MemTable,
           dicts: dict[str, StringDict], sealed: dict[int, int]) -> int:
    """Replay whole records into the memtable, skipping each user's events in records that
    end at or before that user's "sealed through" offset (already in a segment)."""
    events = 0
    for offset, rec_type, payload in result.records:
        if rec_type != wal_mod.REC_APPEND:
            continue
        end = offset + wal_mod.RECORD_HEADER_SIZE + len(payload)
        keys, counts, ts, raw = wal_mod.decode_append(schema, payload)
        # Codes are assigned in log order by every replayer, so strings of skipped (sealed)
        # events are encoded too: later records then get the codes the writer gave them.
        cols = {name: (dicts[name].encode(arr) if name in dicts else arr)
                for name, arr in raw.items()}
        if sealed:
            live = [sealed.get(user_hash(key_bytes(k)[1]), -1) < end for k in keys]
            if not all(live):
                rows = np.repeat(np.asarray(live, dtype=bool), np.asarray(counts, np.int64))
                keys = [k for k, ok in zip(keys, live) if ok]
                counts = [n for n, ok in zip(counts, live) if ok]
                ts = ts[rows]
                cols = {k: v[rows] for k, v in cols.items()}
                if not keys:
                    continue
        mem.add_grouped(keys, counts, ts, cols, end=end)
        events += int(ts.size)
    return events
