"""Sealing memtable tails into real-time segments: one long tail on its own (a partial seal),
or every tail at once (a full flush). Encodes and appends through a `SegmentWriter`, and
returns each user's new extent list for the caller's `Edit`; publishing, the log and the
memtable stay with the store (docs/design/realtime.md).
"""

from __future__ import annotations

from typing import Any

from . import segment_batch
from .index import Extent, user_hash
from .layout import segment_bounds
from .manifest import Manifest
from .memtable import MemTable, UserTail
from .segment import KEY_INT64, KEY_STRING, key_bytes
from .segment_writer import SegmentWriter, encode_user_segment

WRITE_CHUNK = 8 << 20  # bytes of segments per write() in a full flush


def seal_tails(m: Manifest, w: SegmentWriter, tails: list[tuple[Any, UserTail]]
               ) -> tuple[dict[int, list[Extent]], int]:
    """Each tail, sorted and cut into recency tiers, appended to `w`. Returns the users' new
    extent lists (the new segments before the old ones) and the number of events."""
    seg_max = int(m.settings["segment_events"])
    level = int(m.settings["zstd_level"])
    users: dict[int, list[Extent]] = {}
    events = 0
    for key, tail in tails:
        ts, cols = tail.sorted_arrays()
        fresh = []
        bounds = segment_bounds(ts, seg_max)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            blob = encode_user_segment(m.schema, key, ts[lo:hi],
                                       {k: v[lo:hi] for k, v in cols.items()}, level)
            fresh.append(w.append(blob, hi - lo, int(ts[lo]), int(ts[hi - 1])))
        h = user_hash(key_bytes(key)[1])
        users[h] = list(reversed(fresh)) + m.index.extents_of(h)
        events += int(ts.size)
    return users, events


def seal_memtable(m: Manifest, w: SegmentWriter, mem: MemTable) -> dict[int, list[Extent]]:
    """Every tail of `mem` appended to `w`; returns each user's new extent list. Tails are short
    (a long one is sealed on its own), so all users are encoded at once by the vectorised
    encoder when the schema allows it."""
    schema = m.schema
    seg_max = int(m.settings["segment_events"])
    level = int(m.settings["zstd_level"])
    keys, ts, cols, starts, counts = mem.grouped()
    users: dict[int, list[Extent]] = {}
    if not keys:
        return users
    hashes = [user_hash(key_bytes(k)[1]) for k in keys]
    if segment_batch.supported(schema) and int(counts.max()) <= seg_max:
        key_type = KEY_STRING if schema.user_type == "string" else KEY_INT64
        spec = [(c.id, c.type, cols[c.name], c.level if c.level is not None else level)
                for c in schema.columns]
        made = list(segment_batch.encode_users(
            keys, key_type, [key_bytes(k)[1] for k in keys], schema.version, ts, spec, starts,
            counts))
        i = 0
        while i < len(made):
            j, size = i, 0
            while j < len(made) and (j == i or size + len(made[j][1]) <= WRITE_CHUNK):
                size += len(made[j][1])
                j += 1
            fid, off = w.append_many([b for _k, b, _n, _a, _z in made[i:j]])
            for (_key, blob, n, mn, mx), h in zip(made[i:j], hashes[i:j]):
                users[h] = [Extent(fid, off, len(blob), n, mn, mx), *m.index.extents_of(h)]
                off += len(blob)
            i = j
        return users
    for i, key in enumerate(keys):
        s, e = int(starts[i]), int(starts[i] + counts[i])
        fresh = []
        for lo in range(s, e, seg_max):
            hi = min(lo + seg_max, e)
            blob = encode_user_segment(schema, key, ts[lo:hi],
                                       {k: v[lo:hi] for k, v in cols.items()}, level)
            fresh.append(w.append(blob, hi - lo, int(ts[lo]), int(ts[hi - 1])))
        users[hashes[i]] = list(reversed(fresh)) + m.index.extents_of(hashes[i])
    return users
