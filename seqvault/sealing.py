"""Sealing memtable tails into real-time segments: one long tail on its own (a partial seal),
or every tail at once (a full flush). Encodes and appends through a `SegmentWriter`, and
returns each user's new extent list for the caller's `Edit`; publishing, the log and the
memtable stay with the store (docs/design/realtime.md).

Late events (a timestamp at or below the newest one the user already has sealed) go to a
segment of their own: the in-order segment then starts strictly after everything older, so a
"last N" read stops at it (reads.choose_sources) instead of decoding every older segment that
one late event made overlap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import segment_batch
from .index import Extent
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
        h = m.claim(key)  # its slot: a new key may not take another's (hash collisions)
        old = m.index.extents_of(h)
        cut = late_cut(ts, old)
        fresh = []
        for a, b in ((0, cut), (cut, int(ts.size))):  # late part, then the in-order part
            if b <= a:
                continue
            bounds = segment_bounds(ts[a:b], seg_max)
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                lo, hi = lo + a, hi + a
                blob = encode_user_segment(m.schema, key, ts[lo:hi],
                                           {k: v[lo:hi] for k, v in cols.items()}, level)
                fresh.append(w.append(blob, hi - lo, int(ts[lo]), int(ts[hi - 1])))
        users[h] = list(reversed(fresh)) + old
        events += int(ts.size)
    return users, events


def late_cut(ts: np.ndarray, old: list[Extent]) -> int:
    """Index in sorted `ts` where events newer than every sealed one start (0: none late)."""
    if not old or not ts.size:
        return 0
    newest = max(e.max_ts for e in old)
    return int(np.searchsorted(ts, newest, side="right"))


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
    hashes = [m.claim(k) for k in keys]  # slots: new keys never take another's
    olds = [m.index.extents_of(h) for h in hashes]
    if segment_batch.supported(schema) and int(counts.max()) <= seg_max:
        # One piece per user, two for a user with late events (late part first): the
        # vectorised encoder takes pieces as if they were users.
        p_keys: list[Any] = []
        p_users: list[int] = []
        p_starts: list[int] = []
        p_counts: list[int] = []
        for i, key in enumerate(keys):
            s, n = int(starts[i]), int(counts[i])
            cut = late_cut(ts[s:s + n], olds[i])
            for a, b in ((0, cut), (cut, n)):
                if b > a:
                    p_keys.append(key)
                    p_users.append(i)
                    p_starts.append(s + a)
                    p_counts.append(b - a)
        key_type = KEY_STRING if schema.user_type == "string" else KEY_INT64
        spec = [(c.id, c.type, cols[c.name], c.level if c.level is not None else level)
                for c in schema.columns]
        made = list(segment_batch.encode_users(
            p_keys, key_type, [key_bytes(k)[1] for k in p_keys], schema.version, ts, spec,
            np.asarray(p_starts, np.int64), np.asarray(p_counts, np.int64)))
        fresh: dict[int, list[Extent]] = {}
        i = 0
        while i < len(made):
            j, size = i, 0
            while j < len(made) and (j == i or size + len(made[j][1]) <= WRITE_CHUNK):
                size += len(made[j][1])
                j += 1
            fid, off = w.append_many([b for _k, b, _n, _a, _z in made[i:j]])
            for (_key, blob, n, mn, mx), u in zip(made[i:j], p_users[i:j]):
                fresh.setdefault(u, []).append(Extent(fid, off, len(blob), n, mn, mx))
                off += len(blob)
            i = j
        for u, exts in fresh.items():
            users[hashes[u]] = [*reversed(exts), *olds[u]]
        return users
    for i, key in enumerate(keys):
        s, e = int(starts[i]), int(starts[i] + counts[i])
        cut = s + late_cut(ts[s:e], olds[i])
        pieces: list[Extent] = []
        for a, b in ((s, cut), (cut, e)):
            for lo in range(a, b, seg_max):
                hi = min(lo + seg_max, b)
                blob = encode_user_segment(schema, key, ts[lo:hi],
                                           {k: v[lo:hi] for k, v in cols.items()}, level)
                pieces.append(w.append(blob, hi - lo, int(ts[lo]), int(ts[hi - 1])))
        users[hashes[i]] = list(reversed(pieces)) + olds[i]
    return users
