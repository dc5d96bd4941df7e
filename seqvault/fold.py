"""Folding a user's small real-time segments into the one segment a full flush writes for it.

When `append_batch` loads many users over many calls, a user's few events land in several
memtable-cap flushes. Without folding, each flush left one more tiny segment per user and the
merge rebuilt every user alone (docs/design/realtime.md, "Many-user batches"). Here the flush
reads the user's old segments back (in large windows, one `pread` per window), decodes them all
at once (`decode_batch.decode_many`: every checksum verified) and sorts them together with the
memtable's events, so the user ends with one canonical segment — the bytes a merge would have
written — that merge leaves alone.

Only users whose whole list is real-time segments and whose events fit the newest tier
(`RECENT_SEGMENT_EVENTS`) are folded. The old segments stay valid on disk until the commit that
publishes the folded one (it rotates the log in the same transaction), so a crash at any point
leaves either the old list with the old log or the new list with the new log; the replaced
segments become garbage that reclamation counts from the index like any other.
Anything unusual (a segment of another layout, a key or count that does not match its extent,
a short read, a bad checksum) folds nobody: the flush then writes what it wrote before, and the
damage is reported by the reads and merges that touch those segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .crc_many import copy_ranges
from .decode_batch import decode_many
from .errors import CorruptionError
from .files import ExtentFiles
from .index import Extent, unpack_extents
from .layout import RECENT_SEGMENT_EVENTS, group_time_order
from .manifest import Manifest
from .reads import user_events

# A flush folds only when at least this many of its users have segments to fold: below that,
# merge's batched path (merge_batch.py) folds them cheaply enough, and a small flush keeps the
# layout it always had (tests set it to 1 to fold small flushes).
FOLD_MIN_USERS = 1_024
WINDOW = 16 << 20  # bytes of a file read in one pread (segments are grouped by window)


@dataclass
class Folded:
    """The old events of the folded users: user u's are `counts[u]` rows (0 for a user not
    folded), users in order, each user's segments oldest first (arrival order)."""

    fold: np.ndarray  # bool per user
    counts: np.ndarray  # int64 per user
    ts: np.ndarray  # int64
    cols: dict[int, np.ndarray]  # by column id; string columns as dictionary codes
    segments: int  # old segments read


def candidates(m: Manifest, old_slots: np.ndarray, old_counts: np.ndarray,
               counts: np.ndarray) -> np.ndarray:
    """Which users to fold (bool per user): a non-empty old list of real-time segments only,
    whose events and the memtable's fit the newest tier."""
    n = int(counts.size)
    if not old_slots.size:
        return np.zeros(n, dtype=bool)
    idx = m.index
    owner = np.repeat(np.arange(n), old_counts)
    e_file = idx.e_file[old_slots].astype(np.int64)
    is_rt = np.zeros(max(int(e_file.max()), max(m.catalog, default=0)) + 1, dtype=bool)
    for fid, info in m.catalog.items():
        is_rt[fid] = info.kind == "rt"
    old_events = np.bincount(owner, weights=idx.e_count[old_slots], minlength=n)
    other = np.bincount(owner, weights=~is_rt[e_file], minlength=n) > 0
    return (old_counts > 0) & ~other & (old_events + counts <= fold_limit(m))


def fold_limit(m: Manifest) -> int:
    return min(RECENT_SEGMENT_EVENTS, int(m.settings["segment_events"]))


def fold_old(m: Manifest, kbytes: list[bytes] | np.ndarray, hashes: np.ndarray,
             old_slots: np.ndarray, old_counts: np.ndarray, counts: np.ndarray
             ) -> Folded | None:
    """The flush's users (`old_slots`/`old_counts`: their current lists from
    `HashIndex.chains`, newest first; `counts`: their memtable events; `hashes`: their slots)
    whose old segments are to be folded, with those segments decoded; None when nobody is."""
    n = int(counts.size)
    fold = candidates(m, old_slots, old_counts, counts)
    if int(fold.sum()) < max(1, FOLD_MIN_USERS):
        return None
    idx = m.index
    owner = np.repeat(np.arange(n), old_counts)
    # The folded users' segments, user by user, oldest first (chains gives newest first).
    sel = np.flatnonzero(fold[owner])[::-1]
    sel = sel[np.argsort(owner[sel], kind="stable")]
    ext = idx.extent_records(old_slots[sel])
    seg_owner = owner[sel]
    got = _read_decode(m, ext)
    if got is not None:
        keys, seg_counts, ts, cols = got
        if isinstance(kbytes, np.ndarray):
            same = np.ascontiguousarray(keys).view("<i8").reshape(-1) == kbytes[seg_owner]
            ok = bool(same.all())
        else:
            ok = all(bytes(k) == kbytes[u] for k, u in zip(keys, seg_owner.tolist()))
        if ok and np.array_equal(seg_counts, ext["count"].astype(np.int64)):
            per_user = np.bincount(seg_owner, weights=seg_counts, minlength=n).astype(np.int64)
            return Folded(fold, per_user, ts, cols, int(sel.size))
    return _one_by_one(m, fold, hashes, seg_owner, ext)


def _one_by_one(m: Manifest, fold: np.ndarray, hashes: np.ndarray, seg_owner: np.ndarray,
                ext: np.ndarray) -> Folded | None:
    """The bulk decode declined (segments of an older schema, or damage): each candidate
    decoded on its own (`old_events`); a user whose segments do not decode is not folded."""
    fold = fold.copy()
    counts = np.zeros(fold.size, dtype=np.int64)
    ts_parts: list[np.ndarray] = []
    col_parts: dict[int, list[np.ndarray]] = {c.id: [] for c in m.schema.columns}
    bounds = np.flatnonzero(np.diff(seg_owner)) + 1
    exts = unpack_extents(ext.tobytes())
    for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), seg_owner.size]):
        u = int(seg_owner[a])
        got = old_events(m, int(hashes[u]), exts[a:b])
        if got is None:
            fold[u] = False
            continue
        counts[u] = got[0].size
        ts_parts.append(got[0])
        for cid, arr in got[1].items():
            col_parts[cid].append(arr)
    if not fold.any():
        return None
    ts = np.concatenate(ts_parts)
    cols = {cid: np.concatenate(parts) for cid, parts in col_parts.items()}
    return Folded(fold, counts, ts, cols, int(seg_owner.size))


def old_events(m: Manifest, h: int, extents: list[Extent]
               ) -> tuple[np.ndarray, dict[int, np.ndarray]] | None:
    """One user's old segments (oldest first) decoded and merged by time (ties in arrival
    order), or None when they do not decode (the damage stays where reads report it)."""
    try:
        got = user_events(m.files, extents, m.schema, expect_hash=h, slot_of=m.index.slot_of)
    except CorruptionError:
        return None
    return got.ts, got.cols


def _read_decode(m: Manifest, ext: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray]] | None:
    """Read and decode the segments `ext` (EXTENT_DTYPE records) in their order: (keys, event
    counts, ts, columns by id), or None when they do not read or decode as one layout."""
    columns = [(c.id, np.dtype(np.uint32) if c.is_string else c.dtype) for c in m.schema.columns]
    buf, offsets = read_segments(m.files, ext)
    if buf is None:
        return None
    try:
        dec = decode_many(buf, offsets, ext["len"].astype(np.int64), columns)
    except CorruptionError:
        return None
    if dec is None:
        return None
    return np.asarray(dec.keys), dec.counts.astype(np.int64), dec.ts, dec.cols


def read_segments(files: ExtentFiles, ext: np.ndarray) -> tuple[bytes | None, np.ndarray]:
    """The bytes of the segments `ext` (EXTENT_DTYPE records), one after another in that order,
    and where each starts; (None, ...) when a file is short or does not read. Segments of one
    file within one WINDOW-aligned span share one pread."""
    n = int(ext.size)
    fids = ext["file"].astype(np.int64)
    offs = ext["off"].astype(np.int64)
    lens = ext["len"].astype(np.int64)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    win = fids * ((1 << 33) // WINDOW) + offs // WINDOW
    order = np.lexsort((offs, win))
    bounds = np.flatnonzero(np.diff(win[order])) + 1
    out = np.empty(int(lens.sum()), dtype=np.uint8)
    for g in np.split(order, bounds):
        lo = int(offs[g].min())
        hi = int((offs[g] + lens[g]).max())
        try:
            data = files.pread(int(fids[g[0]]), lo, hi - lo)
        except OSError:
            return None, starts
        if len(data) != hi - lo:
            return None, starts
        # One compiled copy per window, not a slice and a join per segment (~1 us each, a
        # million segments in a many-user flush's reads).
        copy_ranges(data, offs[g] - lo, lens[g], out, starts[g])
    return out.tobytes(), starts


def join(f: Folded, schema: Any, ts: np.ndarray, cols: dict[str, np.ndarray],
         starts: np.ndarray, counts: np.ndarray
         ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The memtable's grouped events (user u owns rows starts[u] : starts[u] + counts[u],
    sorted by time) with the folded users' old events merged in: sorted by (user, time), ties
    in arrival order (old segments first, as a merge orders them)."""
    n = int(counts.size)
    mem_user = np.repeat(np.arange(n), counts)
    old_user = np.repeat(np.arange(n), f.counts)
    all_user = np.concatenate((old_user, mem_user))
    all_ts = np.concatenate((f.ts.astype(np.int64, copy=False), ts.astype(np.int64, copy=False)))
    order = group_time_order(all_user, all_ts)  # stable: old rows, placed first, win ties
    new_cols = {}
    for c in schema.columns:
        mine = cols[c.name]
        new_cols[c.name] = np.concatenate((f.cols[c.id].astype(mine.dtype, copy=False),
                                           mine))[order]
    new_counts = counts + f.counts
    new_starts = np.zeros(n, dtype=np.int64)
    np.cumsum(new_counts[:-1], out=new_starts[1:])
    return all_ts[order], new_cols, new_starts, new_counts
