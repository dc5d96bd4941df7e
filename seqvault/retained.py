"""What reads can return, counted: `stats` never counts events that retention hides.

Retention (schema `max_age`, `max_events`) is applied at read time and physically at the next
merge; between the two, the index still holds events that no read returns. `retained_counts`
counts per user what a read with no arguments returns — the newest `max_events` of the events
not older than `max_age` — over the sealed extents and the memtable together, and the rest as
`expired_events` (awaiting the merge that drops them).

Cost: whole extents are classified from the index's per-extent min/max timestamps with NumPy
(one pass per chain depth, not per user); only an extent that straddles the age cutoff has its
timestamp column decoded (`read_ts`), at most one or two per user whose history crosses the
cutoff. Without `max_age` nothing is decoded and the count is exact from the index alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .index import Extent, HashIndex


@dataclass(frozen=True)
class Retained:
    users: int  # users with at least one event a read returns
    events: int  # events reads return, over all users
    expired_events: int  # held on disk or in memory, hidden by retention until the next merge


def _sealed_visible(index: HashIndex, cutoff: int | None,
                    read_ts: Callable[[int, Extent], np.ndarray]) -> np.ndarray:
    """Per index row: sealed events at or after `cutoff` (all of them without a cutoff)."""
    n = index.n_users
    if cutoff is None:
        return index.u_count[:n].astype(np.int64)
    visible = np.zeros(n, dtype=np.int64)
    rows = np.arange(n, dtype=np.int64)
    cur = index.u_head[:n].astype(np.int64)
    straddling: list[tuple[int, int]] = []
    while True:
        live = cur >= 0
        if not live.any():
            break
        rows, cur = rows[live], cur[live]
        count = index.e_count[cur].astype(np.int64)
        lo, hi = index.e_min[cur], index.e_max[cur]
        whole = lo >= cutoff
        np.add.at(visible, rows[whole], count[whole])
        part = (~whole) & (hi >= cutoff)
        straddling.extend(zip(rows[part].tolist(), cur[part].tolist()))
        cur = index.e_next[cur].astype(np.int64)
    for row, e in straddling:
        ext = Extent(int(index.e_file[e]), int(index.e_off[e]), int(index.e_len[e]),
                     int(index.e_count[e]), int(index.e_min[e]), int(index.e_max[e]))
        ts = read_ts(row, ext)
        visible[row] += int(np.count_nonzero(ts >= cutoff))
    return visible


def retained_counts(index: HashIndex, memtable: Iterable[tuple[int, np.ndarray]],
                    cutoff: int | None, max_events: int | None,
                    read_ts: Callable[[int, Extent], np.ndarray]) -> Retained:
    """Counts of what reads return. `memtable` yields (index row or -1, tail timestamps) per
    user in memory; `read_ts(row, extent)` decodes one sealed extent's timestamps."""
    sealed = _sealed_visible(index, cutoff, read_ts)
    held = int(index.u_count[:index.n_users].sum(dtype=np.uint64))
    extra: list[int] = []  # users only in memory
    for row, ts in memtable:
        held += int(ts.size)
        n = int(ts.size) if cutoff is None else int(np.count_nonzero(ts >= cutoff))
        if row >= 0:
            sealed[row] += n
        else:
            extra.append(n)
    per_user = np.concatenate([sealed, np.asarray(extra, dtype=np.int64)])
    if max_events is not None:
        per_user = np.minimum(per_user, max_events)
    events = int(per_user.sum())
    return Retained(users=int(np.count_nonzero(per_user)), events=events,
                    expired_events=held - events)

