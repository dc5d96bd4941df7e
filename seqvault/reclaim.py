"""Space accounting and file deletion for lifetime merge (docs/design/merge.md).

Live bytes are not book-kept incrementally: they are *derived* from the DRAM index whenever
they are needed — one vectorised walk over every user's extent chain gives, for every live
extent, its slot and its owner; a `bincount` over the extents' files weighted by their lengths
gives the live bytes of each file. Garbage = catalog size − live. The figure can never drift
from the truth (a crash, a bulk load that replaced extents, a skipped merge: all are counted
right) and costs a few milliseconds per million extents.

Deleting a file (the protocol, step by step, is in docs/design/merge.md, "Deleting files"):

1. merge publishes new extent lists that no longer refer to the file (commit C1);
2. one LMDB transaction drops the file from the catalog and bumps the commit seq (C2);
3. the writer retires the file in its own `ExtentFiles` (new opens fail, the fd closes when no
   pread is using it) and unlinks it.

A reader (this process or another) whose snapshot is older than C1 may still hold extents in
the file. If it already has the fd open, POSIX keeps the bytes readable until it closes the fd.
If it opens the file after the unlink, the open fails with ENOENT: the read is redone on a fresh
snapshot, which is at least C2 (the unlink happened after C2 committed) and therefore does not
refer to the file — file ids are never reused. A reader closes the fds of files that left the
catalog at its next refresh, which gives the disk space back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engine import Engine
from .index import HashIndex
from .manifest import Edit, FileInfo
from .wal import fsync_dir


@dataclass
class ExtentMap:
    """Every live extent of the index: its slot and the row of the user who owns it."""

    slots: np.ndarray  # int64 extent slots
    owners: np.ndarray  # int64 user rows
    depth: np.ndarray  # int64 position in the owner's chain (0 = newest)


def extent_map(index: HashIndex) -> ExtentMap:
    """Walk all chains at once: round k visits the k-th extent of every user that has one."""
    n = index.n_users
    heads = index.u_head[:n].astype(np.int64)
    rows = np.nonzero(heads >= 0)[0].astype(np.int64)
    cur = heads[rows]
    slots: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    depths: list[np.ndarray] = []
    k = 0
    while cur.size:
        slots.append(cur)
        owners.append(rows)
        depths.append(np.full(cur.size, k, dtype=np.int64))
        nxt = index.e_next[cur].astype(np.int64)
        keep = nxt >= 0
        cur, rows = nxt[keep], rows[keep]
        k += 1
    if not slots:
        empty = np.zeros(0, dtype=np.int64)
        return ExtentMap(empty, empty, empty)
    return ExtentMap(np.concatenate(slots), np.concatenate(owners), np.concatenate(depths))


def live_bytes(index: HashIndex, emap: ExtentMap | None = None) -> dict[int, int]:
    """Bytes of each file still referred to by the index (files with none are absent)."""
    emap = emap if emap is not None else extent_map(index)
    if emap.slots.size == 0:
        return {}
    files = index.e_file[emap.slots].astype(np.int64)
    sums = np.bincount(files, weights=index.e_len[emap.slots].astype(np.float64))
    nz = np.nonzero(sums)[0]
    return {int(f): int(sums[f]) for f in nz}


def file_usage(engine: Engine, live: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """Per-file size, live and garbage bytes. holds: the store lock."""
    m = engine.manifest
    if live is None:
        live = live_bytes(m.index)
    active = engine.active_files()
    out = []
    for fid, info in sorted(m.catalog.items()):
        lv = min(live.get(fid, 0), info.size)
        out.append({"file": fid, "kind": info.kind, "size": info.size, "live": lv,
                    "garbage": info.size - lv,
                    "live_ratio": (lv / info.size) if info.size else 1.0,
                    "active": fid in active, "sealed": info.sealed})
    return out


def seal_writers(engine: Engine, live: dict[int, int], ratio: float) -> dict[int, FileInfo]:
    """Stop the store's own writers from appending to files that are mostly garbage, so those
    can be reclaimed (the next flush or bulk load starts a fresh file). holds: the store lock."""
    sealed: dict[int, FileInfo] = {}
    for w in engine.writers.values():
        fid = w.file_id
        if fid is None or w.size == 0 or live.get(fid, 0) / w.size >= ratio:
            continue
        info = w.seal()
        if info is not None:
            sealed[fid] = info
    return sealed


def drop_dead_files(engine: Engine, candidates: set[int] | None = None,
                    sealed: dict[int, FileInfo] | None = None, fault: Any = None
                    ) -> dict[str, int]:
    """Drop from the catalog every file with no live extent (among `candidates`, or all) and
    publish the `sealed` records, then unlink the dropped files. Returns {"files", "bytes"}."""
    m = engine.manifest
    with engine.lock:
        # A background flush's files hold no live extent until its commit: wait for it.
        engine.wait_flush()
        live = live_bytes(m.index)
        active = engine.active_files()
        dead = [fid for fid in (candidates if candidates is not None else list(m.catalog))
                if fid in m.catalog and fid not in active and live.get(fid, 0) == 0]
        if not dead and not sealed:
            return {"files": 0, "bytes": 0}
        paths = [m.files.path(fid) for fid in dead]
        freed = sum(m.catalog[fid].size for fid in dead)
        files = {fid: info for fid, info in (sealed or {}).items() if fid not in dead}
        # The commit retires the dropped files in this process (docs/design/merge.md, step 3).
        engine.publish(Edit(files=files, drop_files=dead))
    if fault is not None and dead:
        fault("reclaim:after_drop_commit")
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    if paths:
        fsync_dir(engine.path / "data")
        if fault is not None:
            fault("reclaim:after_unlink")
    return {"files": len(dead), "bytes": freed}
