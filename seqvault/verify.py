"""`verify`: check every byte a read could serve, without trusting the index.

Every extent of every user against its file (bounds, header, every column checksum,
sortedness, agreement with the index: count, min/max ts, user hash), file sizes against the
catalog, and the current log's record checksums. Called by `SeqVault.verify()` and
`seqvault verify`; reports problems, never raises on them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import wal as wal_mod
from .errors import CorruptionError
from .files import file_name
from .manifest import Manifest
from .segment import key_from_bytes, parse_header, verify_segment

Progress = Callable[[str, int, int], None]


def verify_store(root: Path, manifest: Manifest, update: Progress | None = None
                 ) -> dict[str, Any]:
    """holds: the store lock (the caller's snapshot of the manifest must not change)."""
    problems: list[dict[str, Any]] = []
    data_dir = root / "data"
    for fid, finfo in sorted(manifest.catalog.items()):
        p = data_dir / file_name(finfo.kind, fid)
        if not p.exists():
            if finfo.size > 0:
                problems.append({"path": str(p), "error": "file in the catalog is missing"})
        elif p.stat().st_size < finfo.size:
            problems.append({"path": str(p), "error": f"file has {p.stat().st_size} bytes, the "
                             f"catalog published {finfo.size}"})
    idx = manifest.index
    n_users = len(idx)
    segments = 0
    checked_bytes = 0
    for r in idx.rows():
        h = int(idx.u_hash[r])
        total = 0
        user: Any = None
        for e in idx.extents(r):
            segments += 1
            total += e.count
            info = manifest.catalog.get(e.file)
            path = str(data_dir / file_name(info.kind, e.file)) if info else f"file {e.file}"
            where = f"{path} @ {e.off}"
            if info is None:
                problems.append({"path": path, "offset": e.off, "user_hash": h,
                                 "error": "extent points to a file not in the catalog"})
                continue
            if e.off + e.length > info.size:
                problems.append({"path": path, "offset": e.off, "user_hash": h,
                                 "error": f"extent [{e.off}, {e.off + e.length}) passes the "
                                          f"published size {info.size}"})
                continue
            try:
                buf = manifest.files.pread(e.file, e.off, e.length)
                checked_bytes += len(buf)
                if len(buf) != e.length:
                    raise CorruptionError(f"{where}: short read ({len(buf)} of {e.length} bytes)")
                try:  # name the user even when a column checksum fails below
                    head = parse_header(buf, where=where)
                    user = key_from_bytes(head.key_type, head.key)
                except CorruptionError:
                    pass
                header = verify_segment(buf, where=where)
                user = key_from_bytes(header.key_type, header.key)
                if idx.slot_of(header.key) != h:
                    raise CorruptionError(f"{where}: segment of user {user!r} is indexed under "
                                          "another user's hash")
                if (header.count, header.min_ts, header.max_ts) != (e.count, e.min_ts,
                                                                    e.max_ts):
                    raise CorruptionError(
                        f"{where}: header says {header.count} events in "
                        f"[{header.min_ts}, {header.max_ts}], the index says {e.count} in "
                        f"[{e.min_ts}, {e.max_ts}]")
            except (CorruptionError, OSError) as exc:
                problems.append({"path": path, "offset": e.off, "length": e.length,
                                 "user_id": user, "user_hash": h, "error": str(exc)})
        if total != int(idx.u_count[r]):
            problems.append({"user_id": user, "user_hash": h,
                             "error": f"index counts {int(idx.u_count[r])} events, its extents "
                                      f"hold {total}"})
        if update is not None and (r % 1024 == 0 or r == n_users - 1):
            update("verify", r + 1, n_users)
    wal_path = root / "wal" / wal_mod.wal_name(manifest.wal_id)
    wal_records = 0
    try:
        if os.path.exists(wal_path):
            # Damage and cuts are measured against the log's own synced mark and the
            # manifest's last commit (docs/format/wal.md, L1-L6).
            synced = manifest.synced_of(manifest.wal_id)
            scanned = wal_mod.scan(wal_path, expect_id=manifest.wal_id, synced=synced)
            for _again in range(3):  # a live writer's half-copied record or header (R6)
                if not scanned.problems:
                    break
                time.sleep(0.01)
                scanned = wal_mod.scan(wal_path, expect_id=manifest.wal_id, synced=synced)
            wal_records = len(scanned.records)
            if not scanned.problems and scanned.version == wal_mod.FORMAT_VERSION:
                # records a live (or killed) `batch` writer staged in its ring (ring.md, G4)
                wal_records += len(wal_mod.staged(wal_path, manifest.wal_id, wal_mod.LogPosition(
                    scanned.end, scanned.next_seq, scanned.events)))
            problems.extend(p.to_dict() for p in scanned.problems)
        else:
            problems.append({"path": str(wal_path), "kind": "missing",
                             "error": "the current write-ahead log is missing"})
    except (CorruptionError, OSError) as exc:
        problems.append({"path": str(wal_path), "error": str(exc)})
    return {"ok": not problems, "users": n_users, "segments": segments,
            "bytes_checked": checked_bytes, "wal_records": wal_records, "problems": problems}
