"""Merge of many small users at once: decode all their segments together (`decode_batch`),
sort, and encode one lifetime segment per user together (`segment_batch.encode_many`).

The per-user merge (`merge_work.rebuild_user`) costs about 1 ms of CPU per small user — decoding a few
tiny segments one by one — which made a merge of a million users loaded by `append_batch` take
far longer than loading them (docs/design/realtime.md, "Many-user batches"). This path takes
the users whose result is one segment and who keep nothing of their old list; anything it
cannot decode in bulk goes back to the per-user path, which gives the precise errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import segment_batch
from .decode_batch import decode_many
from .errors import CorruptionError
from .files import ExtentFiles
from .index import Extent, user_hash, user_hashes_int64
from .layout import RECENT_SEGMENT_EVENTS, group_time_order
from .schema import Schema
from .segment import KEY_INT64, KEY_STRING


def small_users(snaps: list[tuple[int, list[Extent]]], kinds: dict[int, str], target: int,
                cands: set[int], retain: Any
                ) -> tuple[list[tuple[int, list[Extent]]], list[tuple[int, list[Extent]]]]:
    """Split snapshots into (small, rest): small users have at most one segment's worth of
    events, something to rewrite (two or more extents, or one in a real-time file or a file
    being reclaimed), nothing the per-user path would keep as it is, and nothing for retention
    to drop (`retain(snap)` says whether retention applies)."""
    limit = min(RECENT_SEGMENT_EVENTS, target)
    small, rest = [], []
    for h, snap in snaps:
        rewrite = len(snap) >= 2 or (len(snap) == 1 and (kinds.get(snap[0].file) == "rt"
                                                          or snap[0].file in cands))
        if (rewrite and sum(e.count for e in snap) <= limit and not retain(snap)
                and not any(kinds.get(e.file) == "lt" and e.count >= target // 2
                            for e in snap)):
            small.append((h, snap))
        else:
            rest.append((h, snap))
    return small, rest


def retains(snap: list[Extent], schema: Schema, cutoff: int | None) -> bool:
    """Whether retention drops some of these events (the per-user path's `retain`)."""
    r = schema.retention
    return ((r.max_events is not None and sum(e.count for e in snap) > r.max_events)
            or (cutoff is not None and min(e.min_ts for e in snap) < cutoff))


@dataclass
class SmallBuild:
    """One small user's new lifetime segment (encoded) and what its sources were."""

    blob: memoryview
    count: int
    min_ts: int
    max_ts: int
    segments_in: int
    bytes_read: int


def build_small(files: ExtentFiles, schema: Schema, level: int,
                snaps: list[tuple[int, list[Extent]]], aliases: Mapping[bytes, int] | None = None
                ) -> dict[int, SmallBuild] | None:
    """One new lifetime segment per user of `snaps` (their events sorted by time, ties in
    arrival order), keyed by user hash; None when the segments are not of one layout (or do
    not decode: the per-user path then names the file, the offset and the user)."""
    if not snaps:
        return {}
    exts = [e for _h, snap in snaps for e in reversed(snap)]  # user by user, oldest first
    n_seg = np.array([len(snap) for _h, snap in snaps], dtype=np.int64)
    raw = [files.pread(e.file, e.off, e.length) for e in exts]
    lengths = np.fromiter((len(b) for b in raw), dtype=np.int64, count=len(raw))
    offsets = np.zeros(len(raw), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    columns = [(c.id, np.dtype(np.uint32) if c.is_string else c.dtype) for c in schema.columns]
    try:
        dec = decode_many(b"".join(raw), offsets, lengths, columns)
    except CorruptionError:
        return None
    if dec is None:
        return None
    hashes = np.array([h for h, _s in snaps], dtype=np.uint64)
    seg_user = np.repeat(np.arange(len(snaps)), n_seg)
    if schema.user_type == "string":
        kb = [bytes(k) for k in dec.keys]
        ok = np.fromiter((user_hash(k) for k in kb), dtype=np.uint64, count=len(kb))
    else:
        keys = np.ascontiguousarray(dec.keys).view("<i8").reshape(-1)
        ok = user_hashes_int64(keys)
    if aliases:
        # Colliding users live at an alternate slot (docs/format/index.md, "Slot hashes"): a
        # segment's key must be the one whose slot (`HashIndex.slot_of`) the user is under.
        seg_kb = kb if schema.user_type == "string" else [k.tobytes() for k in
                                                           keys.astype("<i8")]
        for i, k in enumerate(seg_kb):
            a = aliases.get(k)
            if a is not None:
                ok[i] = a
    if bool((ok != hashes[seg_user]).any()):
        return None
    counts = np.bincount(seg_user, weights=dec.counts, minlength=len(snaps)).astype(np.int64)
    user_of = np.repeat(seg_user, dec.counts)
    order = group_time_order(user_of, dec.ts)  # by user, then time; stable: ties keep arrival
    ts = dec.ts[order]
    first_seg = np.zeros(len(snaps), dtype=np.int64)
    np.cumsum(n_seg[:-1], out=first_seg[1:])
    spec = [(c.id, c.type, dec.cols[c.id][order], c.level if c.level is not None else level)
            for c in schema.columns]
    starts = np.zeros(len(snaps), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    if schema.user_type == "string":
        enc = segment_batch.encode_many(KEY_STRING, [kb[i] for i in first_seg.tolist()],
                                        schema.version, ts, spec, starts, counts)
    else:
        enc = segment_batch.encode_many(KEY_INT64, keys[first_seg], schema.version, ts, spec,
                                        starts, counts)
    read = np.bincount(seg_user, weights=lengths, minlength=len(snaps)).astype(np.int64)
    view = enc.buf.data  # slices of one buffer: no copy per user
    out: dict[int, SmallBuild] = {}
    for i, (h, snap) in enumerate(snaps):
        a = int(enc.offsets[i])
        out[h] = SmallBuild(view[a:a + int(enc.lengths[i])], int(enc.counts[i]),
                            int(enc.mins[i]), int(enc.maxs[i]), len(snap), int(read[i]))
    return out
