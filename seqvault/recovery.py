"""Opening a store: the writer lock, creation, repair of a crashed writer's leftovers, and log
replay (docs/format/manifest.md, "Recovery"; docs/format/wal.md, "Recovery")."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import iofaults
from . import ring as ring_mod
from . import wal as wal_mod
from .errors import CorruptionError, StoreLocked
from .files import file_name, parse_file_name
from .manifest import Manifest, sealed_through
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
    Logs other than the current one (a flush that crashed before or after its commit) and
    their staging rings, spill
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
    keep = (current, ring_mod.ring_path(Path(current)).name)  # and its ring (ring.md, G5)
    for p in (root / "wal").iterdir():
        if p.name not in keep and p.name.startswith("wal-"):
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


def zero(path: Path, at: int, size: int) -> None:
    """Overwrite `size` bytes at `at` with zeros, durably; a failure names the file."""
    try:
        fd = iofaults.open_fd(path, os.O_WRONLY)
        try:
            iofaults.pwrite(fd, bytes(size), at)
            iofaults.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise iofaults.named(exc, path) from exc


@dataclass
class Recovered:
    """What a writer open found in the current log."""

    position: wal_mod.LogPosition  # where appends continue
    events: int  # events replayed into the memtable
    torn: int  # torn-tail bytes zeroed (never acknowledged)
    version: int  # the log's format version (1: the writer rotates it to a version-2 log)
    problems: list[wal_mod.LogProblem]  # acknowledged records missing or damaged (salvage)
    records: int  # good records


def damage_message(root: Path, problems: list[wal_mod.LogProblem]) -> str:
    lines = "; ".join(p.describe() for p in problems)
    return (f"{problems[0].path}: the write-ahead log is damaged, acknowledged writes are "
            f"missing or unreadable ({lines}). Read-only opens still serve the intact data; "
            f"`seqvault repair --store {root}` salvages every good record (see "
            f"`seqvault repair --dry-run` first)")


def recover_log(root: Path, wal_id: int, schema: Schema, mem: MemTable,
                dicts: dict[str, StringDict], sealed: dict[tuple[int, int | None], int], *,
                flushed: int = -1, synced: tuple[int, int, int] | None = None,
                salvage: bool = False) -> Recovered:
    """Writer open: replay the current log into the memtable; zero a torn tail (never
    acknowledged: an acknowledged record is whole) so appends continue from a clean end.

    A log with acknowledged records missing or damaged (docs/format/wal.md, L3-L6) is refused
    with CorruptionError naming `seqvault repair`, unless `salvage` (the repair itself): then
    every good record is replayed, also those after the damage, and nothing is changed on
    disk."""
    path = root / "wal" / wal_mod.wal_name(wal_id)
    if not path.exists():
        if not salvage:
            raise CorruptionError(damage_message(root, [missing_log(root, wal_id, synced)]),
                                  path=str(path))
        return Recovered(wal_mod.LogPosition(), 0, 0, wal_mod.FORMAT_VERSION,
                         [missing_log(root, wal_id, synced)], 0)
    result = wal_mod.scan(path, expect_id=wal_id, synced=synced)
    if result.problems and not salvage:
        raise CorruptionError(damage_message(root, result.problems), path=str(path))
    torn = 0
    if result.problems:
        pass  # salvage: the repair rotates this log away; nothing on disk changes here
    elif result.torn:
        torn = result.torn_bytes
        if result.version == 1:
            cut(path, result.end)
        else:  # keep the size a multiple of the chunk: zero the torn bytes instead
            zero(path, result.end, torn)
    else:
        # What recovery read back may sit only in the page cache (a killed writer's last
        # records): make it durable before the header mark may claim it.
        fd = os.open(path, os.O_RDONLY)
        try:
            iofaults.fsync(fd)
        except OSError as exc:
            raise iofaults.named(exc, path) from exc
        finally:
            os.close(fd)
    if result.version == wal_mod.FORMAT_VERSION and not result.problems:
        # Records a killed `batch` writer had staged but not yet copied into the log: into
        # the log now, durably, before anything is applied or appended (ring.md, G4).
        found = wal_mod.staged(path, wal_id, wal_mod.LogPosition(result.end, result.next_seq,
                                                                 result.events))
        if found:
            write_staged(path, result, found)
            wal_mod.take_staged(result, found)
    events = _apply(result, schema, mem, dicts, sealed, flushed)
    return Recovered(wal_mod.LogPosition(result.end, result.next_seq, result.events), events,
                     torn, result.version, result.problems, len(result.records))


def write_staged(path: Path, result: wal_mod.ScanResult,
                 found: list[tuple[wal_mod.Record, bytes]]) -> None:
    """Write staged records into the log at the end of its good records and fsync, growing
    the file first where rule W2 asks (the writer grew it before staging, so only a log cut
    meanwhile would need it)."""
    data = b"".join(raw for _rec, raw in found)
    end = result.end + len(data)
    try:
        fd = iofaults.open_fd(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if end + result.chunk // 2 > size:
                wal_mod.grow(fd, size, wal_mod.chunks_for(end, result.chunk))
            iofaults.pwrite(fd, data, result.end)
            iofaults.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise iofaults.named(exc, path) from exc


def replay_log(root: Path, wal_id: int, start: int, schema: Schema, mem: MemTable,
               dicts: dict[str, StringDict], sealed: dict[tuple[int, int | None], int], *,
               flushed: int = -1, synced: tuple[int, int, int] | None = None,
               at: wal_mod.LogPosition | None = None
               ) -> tuple[int, list[wal_mod.LogProblem], wal_mod.LogPosition | None]:
    """Read-only opens: apply the log's whole records from `start` (0: the whole log), then
    the records a `batch` writer staged in its ring after them (ring.md, G4); returns the new
    position, the acknowledged records found missing or damaged (the good records around
    them are applied: a damaged log does not hide what is intact), and the position with its
    next seq and events when known (`at`: the one returned last time, if it ends at `start`).
    FileNotFoundError: the writer rotated the log (the caller takes a new snapshot)."""
    path = root / "wal" / wal_mod.wal_name(wal_id)
    known = at if at is not None and at.end == start else None
    ring_there = ring_mod.ring_path(path).exists()
    if start > 0 and wal_mod.nothing_after(path, start):
        if known is None or not ring_there:
            return start, [], known  # the common refresh: no new record (cheaper than a scan)
        result = wal_mod.ScanResult([], start, False, 0, next_seq=known.next_seq,
                                    events=known.events)
    else:
        result = wal_mod.scan(path, start, expect_id=wal_id, synced=synced)
        for _again in range(3):
            # A writer may be writing while we read: a record half-copied into our buffer can
            # look like damage followed by a good record. Real damage is still there on a
            # reread.
            if not result.problems:
                break
            time.sleep(0.01)
            result = wal_mod.scan(path, start, expect_id=wal_id, synced=synced)
    pos = None
    if not result.problems and result.version == wal_mod.FORMAT_VERSION:
        if result.records or start <= wal_mod.FILE_HEADER_SIZE:
            pos = wal_mod.LogPosition(result.end, result.next_seq, result.events)
        elif known is not None:
            pos = known
        elif ring_there:  # a rebuild from a mark with nothing after it: count from the start
            whole = wal_mod.scan(path, 0, expect_id=wal_id, synced=synced)
            if not whole.problems and whole.end == result.end:
                pos = wal_mod.LogPosition(whole.end, whole.next_seq, whole.events)
        if pos is not None and ring_there:
            found = wal_mod.staged(path, wal_id, pos)
            if found:
                wal_mod.take_staged(result, found)
                pos = wal_mod.LogPosition(result.end, result.next_seq, result.events)
    _apply(result, schema, mem, dicts, sealed, flushed)
    return result.end, result.problems, pos


def _apply(result: wal_mod.ScanResult, schema: Schema, mem: MemTable,
           dicts: dict[str, StringDict], sealed: dict[tuple[int, int | None], int],
           flushed: int = -1) -> int:
    """Replay whole records into the memtable, skipping each user's events in records that
    end at or before that user's "sealed through" offset (already in a segment), and every
    record ending at or before the log's `flushed` mark (a background flush sealed them all)."""
    events = 0
    for rec in result.records:
        if rec.rtype != wal_mod.REC_APPEND:
            continue
        end = rec.end
        if end <= flushed:
            # Not even decoded (rule R4 of docs/format/wal.md): the commit that wrote the mark
            # published every dictionary code of these records, and every replayer loaded its
            # dictionaries after that commit, so skipping their strings changes no later code.
            continue
        keys, counts, ts, raw = wal_mod.decode_append(schema, rec.payload)
        # Codes are assigned in log order by every replayer, so strings of skipped (sealed)
        # events are encoded too: later records then get the codes the writer gave them.
        cols = {name: (dicts[name].encode(arr) if name in dicts else arr)
                for name, arr in raw.items()}
        if sealed:
            # By (hash, tag), not by slot: users whose hashes collide stay apart, whatever
            # slots they have or will get.
            live = [sealed_through(sealed, key_bytes(k)[1]) < end for k in keys]
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


def missing_log(root: Path, wal_id: int, synced: tuple[int, int, int] | None
                ) -> wal_mod.LogProblem:
    """Rule L6: the current log is gone; the manifest's mark says what it held."""
    path = root / "wal" / wal_mod.wal_name(wal_id)
    return wal_mod.LogProblem(
        str(path), "missing", 0, synced[0] if synced else None, 1 if synced else None,
        synced[1] if synced else None, synced[2] if synced else None,
        "the current write-ahead log file is missing")


def log_report(root: Path, manifest: Manifest) -> dict[str, Any]:
    """What `seqvault repair` would keep and drop in the current log (nothing is changed)."""
    path = root / "wal" / wal_mod.wal_name(manifest.wal_id)
    if not path.exists():
        p = missing_log(root, manifest.wal_id, manifest.synced_of(manifest.wal_id))
        return {"log": str(path), "version": wal_mod.FORMAT_VERSION, "records": 0,
                "events": 0, "problems": [p.to_dict()], "dropped_events": p.events}
    result = wal_mod.scan(path, expect_id=manifest.wal_id,
                          synced=manifest.synced_of(manifest.wal_id))
    known = [p.events for p in result.problems]
    return {"log": str(path), "version": result.version, "records": len(result.records),
            "events": (sum(r.events for r in result.records) if result.version > 1 else None),
            "problems": [p.to_dict() for p in result.problems],
            "dropped_events": (sum(e for e in known if e is not None)
                               if all(e is not None for e in known) else None)}


def save_damaged_log(root: Path, wal_id: int) -> Path | None:
    """Copy the damaged log to `lost/` (fsynced) before a repair replaces it, as LevelDB's
    RepairDB keeps what it could not use: the dropped bytes stay available for forensics."""
    src = root / "wal" / wal_mod.wal_name(wal_id)
    if not src.exists():  # rule L6: nothing to keep
        return None
    lost = root / "lost"
    lost.mkdir(exist_ok=True)
    dst = lost / f"{src.stem}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    wal_mod.fsync_dir(lost)
    return dst
