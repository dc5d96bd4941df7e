"""Merge's move of users that are already in their lifetime layout: one segment of at most
`RECENT_SEGMENT_EVENTS` events, nothing for retention to drop. Their bytes do not depend on the
file they are in, so a move (reclamation of a mostly-dead file) copies them: read in large
windows, every checksum verified (`verified`), appended to the merger's
output file in one write, fsynced, and published by arrays — a compare-and-swap over
`HashIndex.chains` and one commit (`Edit.batch`) for up to `MOVE_USERS` users.

The per-user path (`Merger._build` / `_publish`) cost ~50 µs of CPU per such user here (an
`extents_of` walk and `Extent` objects at the snapshot and again at the publish, a decode and
an encode, one fsynced commit per `merge_batch_users`): a million users loaded by
`append_batch`, whose flush files reclamation empties, took longer to move than to load
(docs/design/realtime.md, "Many-user batches").

Crash safety is the per-user path's: the copies are fsynced before the commit that points the
index at them (fault points `merge:after_write`, `merge:after_sync`, `merge:after_commit`);
a crash before it leaves unpublished bytes that the next open cuts. A user whose list changed
since the snapshot keeps its new list (a flush prepended segments: they stay in front of the
copy; anything else: skipped, and its copy is garbage — purged, as the per-user path does,
since the change may have been a delete). Anything that does not decode in bulk goes back to
the per-user path, which names the damaged file.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .crc_many import crc_ranges, crc_rows, gather_rows
from .decode_batch import decode_many
from .engine import Engine
from .errors import CorruptionError, MergeFailed, StoreClosed
from .fold import read_segments
from .index import EXTENT_DTYPE, ExtentBatch, HashIndex, user_hash, user_hashes_int64
from .layout import RECENT_SEGMENT_EVENTS
from .manifest import Edit, Purge
from .merge_work import open_output
from .schema import Schema
from .segment import CRC, FORMAT_VERSION, MAGIC, TIME_COLUMN_ID
from .segment_batch import header_dtype
from .wal import fsync_dir

MOVE_USERS = 65_536  # users per move commit (about 20 MB of small segments)


def movers(idx: HashIndex, schema: Schema, hashes: np.ndarray, cutoff: int | None,
           target: int) -> np.ndarray:
    """Which of `hashes` (bool each) are one segment already in lifetime layout that merge
    would only relocate. holds: the store lock."""
    rows = idx.find_many(hashes)
    slots, counts = idx.chains(rows)
    out = counts == 1
    if not out.any():
        return out
    one = np.flatnonzero(out)
    first = np.zeros(counts.size, dtype=np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    s = slots[first[one]]
    ok = idx.e_count[s].astype(np.int64) <= min(RECENT_SEGMENT_EVENTS, target // 2)
    r = schema.retention
    if r.max_events is not None:
        ok &= idx.e_count[s].astype(np.int64) <= r.max_events
    if cutoff is not None:
        ok &= idx.e_min[s].astype(np.int64) >= cutoff
    if idx.alias_slots:  # colliding users: the per-user path checks their keys by alias
        ok &= ~np.isin(hashes[one], np.fromiter(idx.alias_slots, dtype=np.uint64,
                                               count=len(idx.alias_slots)))
    out[one] = ok
    return out


def move_users(merger: Any, hashes: np.ndarray, summary: dict[str, Any]) -> list[int]:
    """Move `hashes` (chosen by `movers`) in commits of `MOVE_USERS`; returns the hashes
    left for the per-user path (their segments did not decode in bulk)."""
    left: list[int] = []
    for start in range(0, hashes.size, MOVE_USERS):
        left += _move_chunk(merger, hashes[start:start + MOVE_USERS], summary)
    return left


def _move_chunk(merger: Any, hashes: np.ndarray, summary: dict[str, Any]) -> list[int]:
    e: Engine = merger.engine
    m = e.manifest
    with e.lock:
        e.check_writable()
        idx = m.index
        slots, counts = idx.chains(idx.find_many(hashes))
        keep = counts == 1  # still one segment (else: the per-user path sees the change)
        first = np.zeros(counts.size, dtype=np.int64)
        np.cumsum(counts[:-1], out=first[1:])
        left = hashes[~keep].tolist()
        hashes = hashes[keep]
        snap = idx.extent_records(slots[first[keep]])
        schema = m.schema
    merger.fault("merge:after_snapshot")
    if not hashes.size:
        return left
    buf, offsets = read_segments(m.files, snap)
    lengths = snap["len"].astype(np.int64)
    if buf is None or not verified(buf, offsets, lengths, snap, hashes, schema):
        return left + hashes.tolist()  # the per-user path decodes them one by one
    done = 0
    while done < hashes.size:
        done += _write_publish(merger, hashes[done:], snap[done:], buf, offsets[done:],
                               lengths[done:], summary)
    return left


def verified(buf: bytes, offsets: np.ndarray, lengths: np.ndarray, snap: np.ndarray,
             hashes: np.ndarray, schema: Schema) -> bool:
    """Every segment is whole and the users' own: magic, format version, column directory of
    this schema, header and column checksums (as `decode_batch.decode_many` verifies them,
    without decoding the columns), the key's slot, and count and time range as the index
    says. False sends the users to the per-user path, which names what is wrong."""
    if schema.user_type == "string":  # keys of many lengths: the bulk decoder checks them
        columns = [(c.id, np.dtype(np.uint32) if c.is_string else c.dtype)
                   for c in schema.columns]
        try:
            dec = decode_many(buf, offsets, lengths, columns)
        except CorruptionError:
            return False
        if dec is None:
            return False
        got = np.fromiter((user_hash(bytes(k)) for k in dec.keys), dtype=np.uint64,
                          count=hashes.size)
        return bool((got == hashes).all()
                    and np.array_equal(dec.counts.astype(np.int64),
                                       snap["count"].astype(np.int64)))
    ncols = len(schema.columns) + 1
    dt = header_dtype(8, ncols)
    size = dt.itemsize
    if int(lengths.min()) < size:
        return False
    data = np.frombuffer(buf, dtype=np.uint8)
    rows = gather_rows(data, offsets, size)
    h = rows.view(dt).reshape(-1)
    d = h["dir"]
    want_ids = np.array([TIME_COLUMN_ID] + [c.id for c in schema.columns])
    stored = d["stored_len"].astype(np.int64)
    ok = ((h["magic"] == MAGIC) & (h["ncols"] == ncols) & (h["key_len"] == 8)
          & (h["version"] >= 1) & (h["version"] <= FORMAT_VERSION)
          & (crc_rows(rows[:, :-CRC.size]) == h["crc"])
          & (d["col_id"] == want_ids).all(axis=1)
          & (size + stored.sum(axis=1) == lengths))
    if not ok.all():
        return False
    col_starts = offsets[:, None] + size + np.cumsum(stored, axis=1) - stored
    if not (crc_ranges(data, col_starts.ravel(), stored.ravel()) == d["crc"].ravel()).all():
        return False
    keys = np.ascontiguousarray(h["key"]).view("<i8").reshape(-1)
    return bool((user_hashes_int64(keys) == hashes).all()
                and (h["count"].astype(np.int64) == snap["count"].astype(np.int64)).all()
                and (h["min_ts"] == snap["min_ts"]).all()
                and (h["max_ts"] == snap["max_ts"]).all())


def _write_publish(merger: Any, hashes: np.ndarray, snap: np.ndarray, buf: bytes,
                   offsets: np.ndarray, lengths: np.ndarray, summary: dict[str, Any]) -> int:
    """Append as many of the segments as fit the output file, fsync, publish; returns how
    many were handled (the caller sends the rest, after a roll to a new file)."""
    e: Engine = merger.engine
    m = e.manifest
    out = merger.out
    with e.lock:
        fid, name, size, new = out.target()
        limit = int(m.settings["max_file_bytes"])
    ends = np.cumsum(lengths)
    k = int(np.searchsorted(ends, limit - size, side="right"))
    if k == 0 and size > 0:  # full: the next call starts a new file
        with e.lock:
            out.roll()
        return 0
    k = max(k, 1)
    # The chosen segments are consecutive in `buf` (read in snapshot order).
    lo, hi = int(offsets[0]), int(offsets[k - 1] + lengths[k - 1])
    path = m.files.dir / name
    app = open_output(path, size)
    try:
        at = app.append(memoryview(buf)[lo:hi])
        merger.fault("merge:after_write")
        app.sync()
        if new:
            fsync_dir(m.files.dir)
        merger.fault("merge:after_sync")
        new_size = app.size
    except BaseException:
        with e.lock:
            out.rollback()
        raise
    finally:
        app.close()
    fresh = snap[:k].copy()
    fresh["file"] = fid
    fresh["off"] = at + (offsets[:k] - lo)
    try:
        _publish(merger, hashes[:k], snap[:k], fresh, new_size, summary)
    except BaseException:
        with e.lock:
            out.rollback()
        raise
    merger.fault("merge:after_commit")
    summary["batches"] += 1
    summary["fsyncs"] += 1 + int(new)
    summary["segments_in"] += k
    summary["segments_out"] += k
    summary["events_in"] += int(snap["count"][:k].sum())
    summary["events_out"] += int(snap["count"][:k].sum())
    summary["bytes_read"] += hi - lo
    summary["bytes_written"] += hi - lo
    return k


def _publish(merger: Any, hashes: np.ndarray, snap: np.ndarray, fresh: np.ndarray,
             new_size: int, summary: dict[str, Any]) -> None:
    """Compare-and-swap by arrays: a user whose oldest (and, at the snapshot, only) extent is
    still the snapshot's gets the copy in its place, after whatever a flush prepended."""
    e: Engine = merger.engine
    m = e.manifest
    out = merger.out
    with e.lock:
        if e.closed:
            raise StoreClosed(f"{e.path} was closed during merge")
        e.wait_flush()  # a background flush's lists are computed against the index as it is
        out.wrote_size(new_size)
        for fid, info in out.pending().items():
            have = os.stat(out.path(fid)).st_size if os.path.exists(out.path(fid)) else -1
            if have < info.size:  # never publish offsets the file does not hold
                raise MergeFailed(f"{out.path(fid)}: the merge wrote {info.size} bytes, "
                                  f"the file has {have}")
        idx = m.index
        slots, counts = idx.chains(idx.find_many(hashes))
        first = np.zeros(counts.size, dtype=np.int64)
        np.cumsum(counts[:-1], out=first[1:])
        last = first + counts - 1
        cur = idx.extent_records(slots)
        ok = counts >= 1
        ok[ok] = ((cur["file"][last[ok]] == snap["file"][ok])
                  & (cur["off"][last[ok]] == snap["off"][ok])
                  & (cur["len"][last[ok]] == snap["len"][ok]))
        cur[last[ok]] = fresh[ok]  # the copy in the snapshot's place
        take = np.repeat(ok, counts)
        batch = ExtentBatch(hashes[ok], counts[ok].astype(np.int64),
                            np.ascontiguousarray(cur[take], dtype=EXTENT_DTYPE))
        skipped = int((~ok).sum())
        purge = None
        if skipped and out.file_id is not None and out.file_id not in m.purge.files:
            # A changed list may be a delete: this copy of the user must not stay on disk.
            purge = Purge(m.purge.files | {int(fresh["file"][0])}, m.purge.wals)
        e.publish(Edit(files=out.pending(), batch=batch, purge=purge), writers=(out,))
    summary["users_merged"] += int(ok.sum())
    summary["users_skipped"] += skipped
