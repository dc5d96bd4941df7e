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
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .meta import pack
from .wal import fsync_dir

if TYPE_CHECKING:
    from .index import HashIndex
    from .vault import SeqVault


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


def file_usage(vault: SeqVault, live: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """Per-file size, live and garbage bytes (caller holds the store lock)."""
    if live is None:
        live = live_bytes(vault.index)
    active = active_files(vault)
    out = []
    for fid, info in sorted(vault.catalog.items()):
        size = int(info.get("size", 0))
        lv = min(live.get(fid, 0), size)
        out.append({"file": fid, "kind": info.get("kind", "rt"), "size": size, "live": lv,
                    "garbage": size - lv, "live_ratio": (lv / size) if size else 1.0,
                    "active": fid in active, "sealed": bool(info.get("sealed"))})
    return out


def active_files(vault: SeqVault) -> set[int]:
    """Files something may still append to: never reclaimed while active."""
    ids = {app.file_id for app in vault._appenders.values()}
    merger = getattr(vault, "_merger", None)
    if merger is not None:
        ids |= merger.active_files()
    return ids


def seal_appenders(vault: SeqVault, live: dict[int, int], ratio: float) -> list[int]:
    """Close the store's own appenders whose file is mostly garbage so it can be reclaimed
    (the next flush starts a fresh file). Caller holds the store lock."""
    sealed = []
    for kind, app in list(vault._appenders.items()):
        if app.size == 0:
            continue
        if live.get(app.file_id, 0) / app.size < ratio:
            app.sync()
            app.close()
            del vault._appenders[kind]
            info = vault.catalog.setdefault(app.file_id, {"kind": kind})
            info["size"] = app.size
            info["sealed"] = True
            sealed.append(app.file_id)
    return sealed


def drop_dead_files(vault: SeqVault, candidates: set[int] | None = None,
                    sealed: list[int] | None = None, fault: Any = None) -> dict[str, int]:
    """Drop from the catalog every file with no live extent (among `candidates`, or all),
    then retire and unlink them. Returns {"files": n, "bytes": b}."""
    v = vault
    with v._lock:
        live = live_bytes(v.index)
        active = active_files(v)
        dead = [fid for fid in (candidates if candidates is not None else list(v.catalog))
                if fid in v.catalog and fid not in active and live.get(fid, 0) == 0]
        if not dead and not sealed:
            return {"files": 0, "bytes": 0}
        seq = v.seq + 1
        with v.meta.begin(write=True) as txn:
            for fid in sealed or ():
                if fid in dead:
                    continue
                info = v.catalog[fid]
                v.meta.put(txn, "files", fid.to_bytes(4, "big"), pack(
                    {"kind": info.get("kind", "rt"), "size": int(info["size"]),
                     "created_ns": info.get("created_ns", time.time_ns()), "sealed": True}))
            for fid in dead:
                v.meta.delete(txn, "files", fid.to_bytes(4, "big"))
            nxt = int(v.meta.get_meta(txn, "next_file_id", 1) or 1)
            v.meta.set_meta(txn, "next_file_id", max(nxt, max(v.catalog, default=0) + 1))
            v.meta.set_meta(txn, "seq", seq)
        v.seq = seq
        paths = []
        freed = 0
        for fid in dead:
            paths.append(v.files.path(fid))
            freed += int(v.catalog[fid].get("size", 0))
            v.files.retire(fid)
            del v.catalog[fid]
    if fault is not None and dead:
        fault("reclaim:after_drop_commit")
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    if paths:
        fsync_dir(v.path / "data")
        if fault is not None:
            fault("reclaim:after_unlink")
    return {"files": len(dead), "bytes": freed}
