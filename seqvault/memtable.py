"""Recent events held in memory until they are sealed into segments, and string dictionaries.

Every event in the memtable is also in the write-ahead log; the memtable is what makes those
events readable at once. Rows are kept in arrival order in blocks that consecutive calls share;
a tail's sorted view is cached for reads, and a flush sorts everything at once. A user's tail
is sealed on its own once it is long (`drop_through`), the rest together at a full flush
(docs/design/realtime.md).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from . import prepare
from .errors import ValidationError
from .index import key_id
from .layout import group_time_order
from .schema import MAX_STRING_CARDINALITY
from .segment import key_bytes

# Rows of a block that small calls share; a call of at least OWN_BLOCK_ROWS rows keeps its own
# arrays as a block (no copy). docs/design/realtime.md, "Many calls' rows in one block".
BLOCK_ROWS = 4096
OWN_BLOCK_ROWS = 1024


class Block:
    """The rows of consecutive append calls (log records), each call's rows grouped by user,
    in arrays with room for `ts.size` rows of which the first `fill` are written. Users' tails
    point into it with (block, start, stop) slices; rows are only ever written past `fill`, so
    a slice handed out never changes. `ends[row]` is the log offset just past the record the
    row came from: a user's tail is cut at a "sealed through" offset by dropping the slices
    whose record ends at or before it. Before, each call had an object of its own (~1,600
    bytes for a one-event call, and a seal's gather chased one per event)."""

    __slots__ = ("ts", "cols", "ends", "fill")

    def __init__(self, ts: np.ndarray, cols: dict[str, np.ndarray], ends: np.ndarray,
                 fill: int = 0) -> None:
        self.ts = ts
        self.cols = cols
        self.ends = ends
        self.fill = fill

    @classmethod
    def like(cls, ts: np.ndarray, cols: dict[str, np.ndarray], rows: int) -> Block:
        """An empty block with room for `rows` rows of these columns' dtypes."""
        return cls(np.empty(rows, dtype=ts.dtype),
                   {k: np.empty(rows, dtype=v.dtype) for k, v in cols.items()},
                   np.empty(rows, dtype=np.int64))

    @classmethod
    def holding(cls, ts: np.ndarray, cols: dict[str, np.ndarray], end: int) -> Block:
        """A block that is a large call's own arrays (the add then finds its rows in place).
        Every row has the same record end: a read-only view of one int64, no array per row
        (a many-user load's memtable holds ~8 bytes an event less)."""
        return cls(ts, cols, np.broadcast_to(np.int64(end), ts.shape))

    def copy_in(self, ts: np.ndarray, cols: dict[str, np.ndarray], end: int) -> int:
        """Write a call's rows past `fill` (nothing to write when the block is the call's own
        arrays); returns the row they start at. The compiled `add_call` does the same."""
        f, n = self.fill, int(ts.size)
        if self.ts is not ts:
            self.ts[f:f + n] = ts
            for k, v in self.cols.items():
                v[f:f + n] = cols[k]
            self.ends[f:f + n] = end
        self.fill = f + n
        return f


def _time_sorted(ts: np.ndarray, cols: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows sorted by timestamp, ties in arrival order (a check only, when in order)."""
    if ts.size > 1 and bool((ts[1:] < ts[:-1]).any()):
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        cols = {k: v[order] for k, v in cols.items()}
    return ts, cols


def _gather(refs: list[tuple[Block, int, int]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The (block, start, stop) slices' columns concatenated in order (fresh arrays unless a
    single slice, whose views are returned: a block's written rows never change)."""
    if len(refs) == 1:
        block, s, e = refs[0]
        return block.ts[s:e], {k: v[s:e] for k, v in block.cols.items()}
    kernel = prepare.KERNEL
    if kernel is not None:  # a hot user's tail: one slice per call, thousands of them
        got = kernel.gather(refs, tuple(refs[0][0].cols))
        if got is not None:
            return got[0], got[1]
    ts = np.concatenate([c.ts[s:e] for c, s, e in refs])
    names = refs[0][0].cols.keys()
    cols = {k: np.concatenate([c.cols[k][s:e] for c, s, e in refs]) for k in names}
    return ts, cols


class GatheredTail:
    """A user's whole tail, gathered and sorted for a seal (`MemTable.tail_for_seal`): what
    `sealing.seal_tails` needs of a `UserTail`, and nothing kept in the memtable."""

    __slots__ = ("count", "_ts", "_cols")

    def __init__(self, count: int, ts: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        self.count = count
        self._ts, self._cols = ts, cols

    def sorted_arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self._ts, self._cols


class JoinedTail:
    """A user's tail in the memtable a background flush is sealing (`older`) and in the
    current one (`newer`), as one tail for reads: `count` and `sorted_arrays`, ties in arrival
    order (every `older` event arrived first). Built per read, only while a flush is in
    flight, for users with events in both."""

    __slots__ = ("count", "_older", "_newer")

    def __init__(self, older: UserTail, newer: UserTail) -> None:
        self.count = older.count + newer.count
        self._older, self._newer = older, newer

    def sorted_arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        ts_a, cols_a = self._older.sorted_arrays()
        ts_b, cols_b = self._newer.sorted_arrays()
        if not ts_a.size:
            return ts_b, cols_b
        if not ts_b.size:
            return ts_a, cols_a
        ts = np.concatenate((ts_a, ts_b))
        cols = {k: np.concatenate((v, cols_b[k])) for k, v in cols_a.items()}
        return _time_sorted(ts, cols)


class SortedRun:
    """A tail's rows sorted by time (ties in arrival order), in arrays with room to grow.

    Reads take views of the first `n` rows; later rows are written past them and a merge
    builds new arrays, so a view handed out never changes (callers keep them outside the store
    lock). Appending in order costs the new rows only (amortised doubling); late rows, which
    the benchmark's stream sends a hot user every ~10 events, merge in one pass over the run
    instead of gathering every slice of the tail again (docs/design/realtime.md, "The sorted
    tail, merged instead of rebuilt")."""

    __slots__ = ("n", "_ts", "_cols", "_view")

    def __init__(self, ts: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        self.n = int(ts.size)
        self._ts, self._cols = ts, cols
        self._view: tuple[np.ndarray, dict[str, np.ndarray]] | None = (ts, cols)

    def view(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        got = self._view
        if got is None:
            n = self.n
            got = self._view = (self._ts[:n], {k: v[:n] for k, v in self._cols.items()})
        return got

    def extend(self, ts: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        """Add sorted rows that arrived after every row of the run."""
        k = int(ts.size)
        if not k:
            return
        n = self.n
        if n and ts[0] < self._ts[n - 1]:
            self._merge(ts, cols)
            return
        if n + k > self._ts.size:
            cap = max(2 * n, n + k, 64)
            self._ts = _grown(self._ts, n, cap)
            self._cols = {c: _grown(v, n, cap) for c, v in self._cols.items()}
        self._ts[n:n + k] = ts
        for c, v in self._cols.items():
            v[n:n + k] = cols[c]
        self.n = n + k
        self._view = None

    def _merge(self, ts: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        n, k = self.n, int(ts.size)
        # Each new row goes after every old row with the same or a smaller timestamp (it
        # arrived later), and the new rows keep their own order: stable, as a fresh sort.
        at = np.searchsorted(self._ts[:n], ts, side="right") + np.arange(k)
        old = np.ones(n + k, dtype=bool)
        old[at] = False
        cap = n + k + max(64, (n + k) // 4)
        out_ts = np.empty(cap, dtype=self._ts.dtype)
        out_ts[:n + k][old] = self._ts[:n]
        out_ts[at] = ts
        out_cols = {}
        for c, v in self._cols.items():
            o = np.empty(cap, dtype=v.dtype)
            o[:n + k][old] = v[:n]
            o[at] = cols[c]
            out_cols[c] = o
        self._ts, self._cols = out_ts, out_cols
        self.n = n + k
        self._view = None


def _grown(a: np.ndarray, n: int, cap: int) -> np.ndarray:
    out = np.empty(cap, dtype=a.dtype)
    out[:n] = a[:n]
    return out


class UserTail:
    """One user's unsealed events: (block, start, stop) slices in arrival order."""

    __slots__ = ("refs", "count", "uid", "sorted_cache")

    def __init__(self, uid: int = 0) -> None:
        self.refs: list[tuple[Block, int, int]] = []
        self.count = 0
        self.uid = uid  # dense id within this memtable (for the vectorised flush)
        # (count, refs, run): the tail sorted as of its first `refs` slices. Appends only add
        # slices, so a later call sorts just the new ones and adds them to the run (appended,
        # or merged when some are older than its last row).
        self.sorted_cache: tuple[int, int, SortedRun] | None = None

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Concatenated columns in arrival order (fresh arrays; the blocks stay shared)."""
        return _gather(self.refs)

    def sorted_arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The tail sorted by timestamp, ties in arrival order: what reads merge. Cached, and
        the slices appended since are sorted on their own and added to the cached run (a hot
        user's read after each append then costs its new rows, instead of gathering thousands
        of slices); the arrays returned are never mutated after, so callers may keep them
        outside the store lock. Events usually arrive in time order, so the sort is mostly
        a check."""
        cached = self.sorted_cache
        if cached is not None:
            count, n_refs, run = cached
            if count == self.count:
                return run.view()
            if n_refs <= len(self.refs):
                run.extend(*_time_sorted(*_gather(self.refs[n_refs:])))
                self.sorted_cache = (self.count, len(self.refs), run)
                return run.view()
        run = SortedRun(*_time_sorted(*self.arrays()))
        self.sorted_cache = (self.count, len(self.refs), run)
        return run.view()

    def drop_through(self, through: int) -> int:
        """Forget the events of records ending at or before log offset `through` (they were
        sealed into a segment); returns how many."""
        # A slice's rows come from one record: its last row's record end is the slice's.
        keep = [r for r in self.refs if r[2] > r[1] and r[0].ends[r[2] - 1] > through]
        dropped = self.count - sum(e - s for _c, s, e in keep)
        self.refs = keep
        self.count -= dropped
        self.sorted_cache = None
        return dropped


class MemTable:
    """Every unsealed event, by user. `through[uid]` marks rows of older records that were
    sealed (per user) since the last full flush, so the vectorised flush skips them.

    Rows live in `blocks`, filled in arrival order (only the last one takes rows). Each call
    leaves one entry per user (block, start, stop, the record's end, the user), chained newest
    first per user in arrays (`_last[uid]`, `_e_prev`): an append costs a copy into the block
    and a few array slots, not a Python object per call or per user; a user's `UserTail` is
    built from its chain when something asks for it (`get`) and kept, and later appends of that
    user extend it (docs/design/realtime.md, "Many-user batches" and "Many calls' rows in one
    block")."""

    SMALL = 48  # users in one call: up to this, a plain loop beats numpy's per-call overhead
    # (measured here: 20 users 46-56 us loop vs 67-91 vectorised; 100 users 210-246 vs 139-163)

    # `nbytes`: what the memtable holds besides its blocks' rows (counted at their capacity,
    # with each row's record end), fitted to tracemalloc over the shapes of
    # tests/engine/test_memtable_bytes.py (docs/design/realtime.md, "The memtable's cap in
    # bytes"): a block's object, dict and array headers; an entry's six slots; a user's dict
    # entry, key and counters; and, for a tail built by a read or a seal, a slice reference and
    # a sorted copy per event.
    BLOCK_BYTES = 1_500
    ENTRY_BYTES = 48
    USER_BYTES = 200
    # a built tail: its object, its list and its sorted copy's arrays (room for 64 rows at
    # least); per slice, the (block, start, stop) tuple and its two ints; per event, the copy's
    # column bytes and the sort's int64 order while a copy is built or extended
    TAIL_BYTES = 3_000
    REF_BYTES = 130
    TAIL_ROW_BYTES = 8

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.users: dict[Any, int] = {}  # key → uid, for users with unsealed events
        # (user hash, tag) → key of `keys[:hashed]`, and hash → key: "sealed through" records
        # name users by (hash, tag), or by hash in a store of format 3 (docs/format/manifest.md,
        # db `sealed`); a reader finds the tail to cut here. Distinct keys stay apart even when
        # their hashes collide (the memtable itself is keyed by the key). Filled lazily
        # (`key_of`), so appends never pay for hashing.
        self.by_id: dict[tuple[int, int], Any] = {}
        self.by_hash: dict[int, Any] = {}
        self.hashed = 0
        self.keys: list[Any] = []  # uid → key
        self.blocks: list[Block] = []
        self.through: dict[int, int] = {}  # uid → sealed through this log offset
        self.tails: dict[int, UserTail] = {}  # built tails, by uid
        self.events = 0
        self.rows = 0  # events in `blocks`: partial seals leave theirs there until the flush
        self.block_bytes = 0  # what the blocks' arrays hold in memory, room included
        self.row_bytes = 0  # column bytes of one event, ts included (from the first call)
        self.tail_rows = 0  # events of the built tails (`tails`)
        self.tail_refs = 0  # their slices
        # `over`: no append can bring `nbytes` to the cap before `rows` reaches this
        self.check_rows = 0
        self.check_cap = 0
        self.max_tail = 0
        # array.array: plain-Python speed for the one-user append, and numpy views (no copy)
        # for the many-user one; a view must not outlive its call (it pins the size). The
        # arrays have room past what is used (`_room`): the users' for len(keys) users, the
        # entries' for `_sizes[0]` entries, so that an append grows none of them most times
        # (six `frombytes` a call were ~0.5 us of a one-event append).
        self._sizes = array("q", [0])  # [entries in use]
        self._count = array("q")  # uid → events in memory
        self._last = array("q")  # uid → the user's newest entry (-1: none)
        self._e_block = array("q")  # entry → index in `blocks`
        self._e_start = array("q")  # entry → its rows in the block: [start, stop)
        self._e_stop = array("q")
        self._e_prev = array("q")  # entry → the user's previous entry (-1: none)
        self._e_end = array("q")  # entry → the log offset after its record
        self._e_uid = array("q")  # entry → its user
        # what `native_append.add_call` updates, in one argument: these objects live until the
        # next `clear`, which builds new ones
        self._parts = (self.users, self.keys, self._count, self._last, self._e_block,
                       self._e_start, self._e_stop, self._e_prev, self._e_end, self._e_uid,
                       self.blocks, self.tails, self._sizes)

    @property
    def parts(self) -> tuple[Any, ...]:
        """What the compiled `add_call` / `append_call` update (`_parts`)."""
        return self._parts

    @property
    def entries(self) -> int:
        """Entries in use (one per user per append call since the last flush)."""
        return self._sizes[0]

    def _room(self, users: int, entries: int) -> None:
        """Room in the user arrays for `users` users and in the entry arrays for `entries`
        entries, growing each by an eighth at least when short, as add_call does (a grow
        every ~12% more entries; `nbytes` counts the room, so it stays small)."""
        for arrs, need in (((self._count, self._last), users),
                           ((self._e_block, self._e_start, self._e_stop, self._e_prev,
                             self._e_end, self._e_uid), entries)):
            have = len(arrs[0])
            if have < need:
                zeros = bytes(8 * max(need - have, have // 8, 256))
                for a in arrs:
                    a.frombytes(zeros)

    def nbytes(self) -> int:
        """An estimate of the memory this memtable holds, in O(1): what `memtable_bytes` caps.
        Counts the blocks with their room (a partial seal's events stay there until the
        flush, so `events` alone does not bound memory), the per-block, per-entry and per-user
        bookkeeping, and the built tails' slice references and sorted copies."""
        return (self.block_bytes + len(self.blocks) * self.BLOCK_BYTES
                + len(self._e_block) * self.ENTRY_BYTES + len(self.keys) * self.USER_BYTES
                + len(self.tails) * self.TAIL_BYTES
                + self.tail_rows * (self.row_bytes + self.TAIL_ROW_BYTES)
                + self.tail_refs * self.REF_BYTES)

    def over(self, cap: int) -> bool:
        """`nbytes() >= cap`, computed only when it can be true: after a look that found room,
        no append can close the gap before `rows` grows by gap ÷ (the most one row can add),
        so an append of one event pays an integer compare instead of `nbytes` (~0.5 us)."""
        if self.rows < self.check_rows and cap == self.check_cap:
            return False
        held = self.nbytes()
        if held >= cap:
            return True
        # One row can add at most: a new block for its call (BLOCK_ROWS rows of room, or its
        # own row), an entry and a user of its own, and as an event of a built tail its
        # sorted copy and a slice.
        row = self.row_bytes + 8
        most = ((BLOCK_ROWS + 1) * row + self.BLOCK_BYTES + self.row_bytes + self.TAIL_ROW_BYTES
                + self.ENTRY_BYTES + self.USER_BYTES + self.REF_BYTES)
        self.check_rows = self.rows + max(1, (cap - held) // most)
        self.check_cap = cap
        return False

    def _block_for(self, ts: np.ndarray, cols: dict[str, np.ndarray], n: int,
                   end: int) -> Block:
        """The block a call of `n` rows goes into: the last one while it has room, else a new
        one (the call's own arrays when it is large)."""
        blocks = self.blocks
        if blocks:
            last = blocks[-1]
            if last.fill + n <= last.ts.size:
                return last
        block = (Block.holding(ts, cols, end) if n >= OWN_BLOCK_ROWS
                 else Block.like(ts, cols, BLOCK_ROWS))
        blocks.append(block)
        # a shared block: its room for BLOCK_ROWS rows and their record ends; a call's own
        # arrays: its rows (their ends are one shared int64)
        self.block_bytes += (BLOCK_ROWS * (self.row_bytes + 8) if n < OWN_BLOCK_ROWS
                             else n * self.row_bytes)
        return block

    def add_grouped(self, keys: Sequence[Any], counts: Sequence[int], ts: np.ndarray,
                    cols: dict[str, np.ndarray], end: int = 0, seal_at: int = 0) -> list[Any]:
        """Add one call's events: rows grouped by user, `counts[i]` rows for `keys[i]` (distinct
        keys); `end`: the log offset after the call's record. Returns the keys whose tail now
        holds at least `seal_at` events (none when 0)."""
        n_rows = int(ts.size)
        self.events += n_rows
        self.rows += n_rows
        if not self.row_bytes:
            self.row_bytes = ts.itemsize + sum(v.itemsize for v in cols.values())
        block = self._block_for(ts, cols, n_rows, end)
        kernel = prepare.KERNEL
        if kernel is not None and type(keys) is list and type(counts) is list:
            return self._add_compiled(kernel, block, keys, counts, ts, cols, end, seal_at)
        base = block.copy_in(ts, cols, end)
        if len(keys) <= self.SMALL:
            return self._add_small(block, base, keys, counts, end, seal_at)
        users = self.users
        new = [k for k in keys if k not in users]
        k = len(keys)
        e0 = self._sizes[0]
        self._room(len(self.keys) + len(new), e0 + k)
        if new:
            first = len(self.keys)
            self.keys.extend(new)
            users.update(zip(new, range(first, first + len(new))))
            np.frombuffer(self._count, dtype=np.int64)[first:first + len(new)] = 0
            np.frombuffer(self._last, dtype=np.int64)[first:first + len(new)] = -1
        bi = len(self.blocks) - 1
        uids = np.fromiter(map(users.__getitem__, keys), dtype=np.int64, count=k)
        n = np.asarray(counts, dtype=np.int64)
        stops = np.cumsum(n) + base
        last = np.frombuffer(self._last, dtype=np.int64)
        prev = last[uids]
        last[uids] = np.arange(e0, e0 + k, dtype=np.int64)
        count = np.frombuffer(self._count, dtype=np.int64)
        count[uids] += n
        now = count[uids]
        del last, count  # a view pins the array's size
        for arr, values in ((self._e_block, bi), (self._e_start, stops - n),
                            (self._e_stop, stops), (self._e_prev, prev), (self._e_end, end),
                            (self._e_uid, uids)):
            np.frombuffer(arr, dtype=np.int64)[e0:e0 + k] = values
        self._sizes[0] = e0 + k
        self.max_tail = max(self.max_tail, int(now.max()))
        if self.tails:  # built tails of these users grow by their slice
            for i in np.flatnonzero(np.isin(uids, np.fromiter(self.tails, np.int64))).tolist():
                tail = self.tails[int(uids[i])]
                tail.refs.append((block, int(stops[i] - n[i]), int(stops[i])))
                tail.count = int(now[i])
                self.tail_rows += int(n[i])
                self.tail_refs += 1
        if not seal_at:
            return []
        return [keys[i] for i in np.flatnonzero(now >= seal_at).tolist()]

    def _add_compiled(self, kernel: Any, block: Block, keys: list[Any], counts: list[int],
                      ts: np.ndarray, cols: dict[str, np.ndarray], end: int,
                      seal_at: int) -> list[Any]:
        """`_add_small`'s work, the copy into the block included, in one C call
        (seqvault/native_append.c, `add_call`), for any number of users: ~0.05 us per user
        against ~1 us in Python (docs/design/realtime.md, "Append kernel" and "Many calls'
        rows in one block")."""
        full, top, rows, refs = kernel.add_call(self._parts, block, keys, counts, ts, cols,
                                                end, seal_at)
        if top > self.max_tail:
            self.max_tail = top
        if refs:  # users whose UserTail was built (read or sealed): their tails grew
            self.tail_rows += rows
            self.tail_refs += refs
        full_keys: list[Any] = full
        return full_keys

    def _add_small(self, block: Block, base: int, keys: Sequence[Any], counts: Sequence[int],
                   end: int, seal_at: int) -> list[Any]:
        """`add_grouped` of a few users (the online append), rows already in `block` from row
        `base`: a plain loop. The reference of `_add_compiled`, and the path when the kernel is
        not built or switched off."""
        users, tails = self.users, self.tails
        count, last = self._count, self._last
        bi = len(self.blocks) - 1
        e = self._sizes[0]
        self._room(len(self.keys) + len(keys), e + len(keys))
        full: list[Any] = []
        start = base
        for key, n in zip(keys, counts):
            uid = users.get(key)
            if uid is None:
                uid = users[key] = len(self.keys)
                self.keys.append(key)
                count[uid] = 0
                last[uid] = -1
            stop = start + n
            self._e_block[e] = bi
            self._e_start[e] = start
            self._e_stop[e] = stop
            self._e_prev[e] = last[uid]
            self._e_end[e] = end
            self._e_uid[e] = uid
            self._sizes[0] = e + 1
            last[uid] = e
            c = count[uid] + n
            count[uid] = c
            tail = tails.get(uid)
            if tail is not None:
                tail.refs.append((block, start, stop))
                tail.count = c
                self.tail_rows += n
                self.tail_refs += 1
            if c > self.max_tail:
                self.max_tail = c
            if seal_at and c >= seal_at:
                full.append(key)
            start = stop
            e += 1
        return full

    def get(self, key: Any) -> UserTail | None:
        """The user's unsealed events (None: none), built from its chain on first use."""
        uid = self.users.get(key)
        if uid is None:
            return None
        tail = self.tails.get(uid)
        if tail is None:
            tail = self.tails[uid] = self._build(uid)
            self.tail_rows += tail.count
            self.tail_refs += len(tail.refs)
            self.check_rows = 0  # a read grew the estimate without a row: `over` looks again
        return tail

    def tail_for_seal(self, key: Any) -> UserTail | GatheredTail | None:
        """The user's unsealed events, for a partial seal that takes them all: its built tail,
        or (with the kernel) its columns gathered along the chain in one C pass
        (`native_append.gather_chain`), without building a `UserTail` the seal then drops."""
        uid = self.users.get(key)
        if uid is None:
            return None
        tail = self.tails.get(uid)
        kernel = prepare.KERNEL
        if tail is not None or kernel is None or not self.blocks:
            return self.get(key)
        got = kernel.gather_chain(self.blocks, self._e_end, self._e_block, self._e_start,
                                  self._e_stop, self._e_prev, self._last[uid],
                                  self.through.get(uid, -1), tuple(self.blocks[0].cols))
        if got is None:
            return self.get(key)
        ts, cols = _time_sorted(got[0], got[1])
        return GatheredTail(self._count[uid], ts, cols)

    def _build(self, uid: int) -> UserTail:
        through = self.through.get(uid, -1)
        kernel = prepare.KERNEL
        if kernel is not None:  # the same walk in C (~20x faster on a hot user's tail)
            tail = UserTail(uid)
            tail.refs = kernel.chain(self.blocks, self._e_block, self._e_start, self._e_stop,
                                     self._e_prev, self._e_end, self._last[uid], through)
            tail.count = self._count[uid]
            return tail
        refs = []
        e = self._last[uid]
        while e >= 0:
            if self._e_end[e] <= through:
                break  # this one and every older one were sealed
            refs.append((self.blocks[self._e_block[e]], self._e_start[e], self._e_stop[e]))
            e = self._e_prev[e]
        refs.reverse()
        tail = UserTail(uid)
        tail.refs = refs
        tail.count = self._count[uid]
        return tail

    def drop_through(self, key: Any, through: int) -> int:
        """The user's events up to log offset `through` were sealed: forget them."""
        uid = self.users.get(key)
        if uid is None:
            return 0
        last = self._last[uid]
        if uid not in self.tails and last >= 0 and self._e_end[last] <= through:
            # Every event of the user is sealed (a partial seal takes the whole tail): no
            # tail to build just to empty it.
            dropped = self._count[uid]
            self.through[uid] = max(self.through.get(uid, -1), through)
            self._count[uid] = 0
            self.events -= dropped
            del self.users[key]
            return dropped
        tail = self.get(key)
        if tail is None:
            return 0
        refs = len(tail.refs)
        dropped = tail.drop_through(through)
        self.tail_refs -= refs - len(tail.refs)
        self.through[tail.uid] = max(self.through.get(tail.uid, -1), through)
        self._count[tail.uid] = tail.count
        self.events -= dropped
        self.tail_rows -= dropped
        if tail.count == 0:
            del self.users[key]
            del self.tails[tail.uid]
        return dropped

    def key_of(self, h: int, tag: int | None) -> Any:
        """The key of a user of this memtable named by (hash `h`, `tag`) — `index.key_id` —
        or by `h` alone when `tag` is None (None: none). Each key is hashed once, on the first
        call after it arrived."""
        keys = self.keys
        if self.hashed < len(keys):
            for key in keys[self.hashed:]:
                kid = key_id(key_bytes(key)[1])
                self.by_id[kid] = key
                self.by_hash[kid[0]] = key
            self.hashed = len(keys)
        return self.by_hash.get(h) if tag is None else self.by_id.get((h, tag))

    def sorted_users(self) -> Iterator[tuple[Any, np.ndarray, dict[str, np.ndarray]]]:
        """Every user's events sorted by (ts, arrival), for a flush: one concatenation and one
        lexsort over the whole memtable instead of gathering each user's slices."""
        users, ts, cols, starts, counts = self.grouped()
        for i, key in enumerate(users):
            s, e = int(starts[i]), int(starts[i] + counts[i])
            yield key, ts[s:e], {k: v[s:e] for k, v in cols.items()}

    def grouped(self) -> tuple[list[Any], np.ndarray, dict[str, np.ndarray], np.ndarray,
                               np.ndarray]:
        """(keys, ts, cols, starts, counts): every user's events contiguous and sorted by
        (ts, arrival), users in first-arrival order — the input of the vectorised encoder."""
        uids, ts, cols, starts, counts = self.grouped_uids()
        keys = self.keys
        return [keys[u] for u in uids.tolist()], ts, cols, starts, counts

    def key_array(self, uids: np.ndarray, dtype: Any = object) -> np.ndarray:
        """The keys of these dense user ids as an array (int64 keys: dtype=np.int64)."""
        return np.asarray(self.keys, dtype=dtype)[uids]

    def grouped_uids(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray,
                                    np.ndarray]:
        """`grouped`, with each user as its dense id (`keys[uid]`) in an array."""
        if not self.blocks or self.events == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, {}, empty, empty
        # Whole-array steps only: entries are in block order and tile each block's written
        # rows, so a row's user (and record end) is its entry's, repeated over its rows.
        blocks = self.blocks
        names = list(blocks[0].cols)
        kernel = prepare.KERNEL
        got = (kernel.gather([(b, 0, b.fill) for b in blocks], tuple(names))
               if kernel is not None else None)
        if got is not None:  # one C pass
            ts, cols = got
        else:
            ts = np.concatenate([b.ts[:b.fill] for b in blocks])
            cols = {k: np.concatenate([b.cols[k][:b.fill] for b in blocks]) for k in names}
        ne = self._sizes[0]
        e_rows = (np.frombuffer(self._e_stop, dtype=np.int64)[:ne]
                  - np.frombuffer(self._e_start, dtype=np.int64)[:ne])
        uid = np.repeat(np.frombuffer(self._e_uid, dtype=np.int64)[:ne], e_rows)
        if self.through:  # rows sealed per user since the last full flush
            ends = np.repeat(np.frombuffer(self._e_end, dtype=np.int64)[:ne], e_rows)
            limit = np.full(len(self.keys), -1, dtype=np.int64)
            limit[np.fromiter(self.through.keys(), np.int64, len(self.through))] = np.fromiter(
                self.through.values(), np.int64, len(self.through))
            live = ends > limit[uid]
            ts, uid = ts[live], uid[live]
            cols = {k: v[live] for k, v in cols.items()}
        order = group_time_order(uid, ts)  # by user, then ts; stable: ties keep arrival order
        ts = ts[order]
        uid = uid[order]
        cols = {k: v[order] for k, v in cols.items()}
        bounds = np.flatnonzero(uid[1:] != uid[:-1]) + 1
        starts = np.concatenate(([0], bounds)).astype(np.int64)
        counts = np.diff(np.concatenate((starts, [uid.size]))).astype(np.int64)
        return uid[starts] if uid.size else uid, ts, cols, starts, counts

    def __len__(self) -> int:
        return len(self.users)


class StringDict:
    """Dictionary of one string column: code ↔ string, append-only.

    Codes are assigned in log order, so replaying the write-ahead log from the last flush
    reassigns exactly the codes the writer assigned (readers replay too, and agree).
    """

    def __init__(self, name: str, values: Iterable[str] = ()) -> None:
        self.name = name
        self.values: list[str] = list(values)
        self.codes: dict[str, int] = {v: i for i, v in enumerate(self.values)}
        self.persisted = len(self.values)
        self._lookup: np.ndarray | None = None

    def check_room(self, strings: np.ndarray) -> None:
        """Raise if adding `strings` would pass the cardinality limit (checked before the log
        write, so a refused call leaves nothing behind)."""
        if len(self.values) + strings.size <= MAX_STRING_CARDINALITY:
            return  # cannot pass the limit even if every string were new
        new = {s for s in strings.tolist() if s not in self.codes}
        if len(self.values) + len(new) > MAX_STRING_CARDINALITY:
            raise ValidationError(
                f"column {self.name!r}: {len(self.values) + len(new)} distinct strings would pass "
                f"the limit of {MAX_STRING_CARDINALITY} for dictionary-encoded columns "
                f"(use an integer id column for high-cardinality values)", column=self.name)

    def encode(self, strings: np.ndarray) -> np.ndarray:
        if strings.size == 0:
            return np.zeros(0, dtype=np.uint32)
        codes = self.codes
        if strings.size <= 4096:
            # A dict lookup per value beats np.unique's object sort for small calls.
            out = np.empty(strings.size, dtype=np.uint32)
            for i, s in enumerate(strings.tolist()):
                code = codes.get(s)
                if code is None:
                    code = self._add(s)
                out[i] = code
            return out
        uniq, inverse = np.unique(strings, return_inverse=True)
        mapped = np.empty(uniq.size, dtype=np.uint32)
        for i, s in enumerate(uniq.tolist()):
            code = codes.get(s)
            mapped[i] = self._add(s) if code is None else code
        return mapped[inverse.reshape(-1)]

    def _add(self, s: str) -> int:
        code = self.codes[s] = len(self.values)
        self.values.append(s)
        self._lookup = None
        return code

    def code_of(self, s: str) -> int | None:
        return self.codes.get(s)

    def lookup(self) -> np.ndarray:
        """code → string, as a numpy unicode array (cached until the dictionary grows)."""
        if self._lookup is None or self._lookup.size != len(self.values):
            self._lookup = np.array(self.values, dtype=np.str_) if self.values else np.array(
                [], dtype=np.str_)
        return self._lookup

    def decode(self, codes: np.ndarray, missing: str | None = None) -> np.ndarray:
        """Codes → numpy unicode array. Code 0xFFFFFFFF (a column absent from an old segment)
        becomes `missing`."""
        if self._lookup is None or self._lookup.size != len(self.values):
            self._lookup = np.array(self.values, dtype=np.str_) if self.values else np.array(
                [], dtype=np.str_)
        if missing is not None and codes.size:
            absent = codes == 0xFFFF_FFFF
            if absent.any():
                base = self.decode(np.where(absent, 0, codes)) if self.values else np.array(
                    [""] * codes.size, dtype=np.str_)
                width = max(base.dtype.itemsize // 4, len(missing), 1)
                out = base.astype(f"<U{width}")
                out[absent] = missing
                return out
        if codes.size and int(codes.max()) >= self._lookup.size:
            from .errors import CorruptionError

            raise CorruptionError(f"column {self.name!r}: dictionary code {int(codes.max())} is "
                                  f"unknown ({self._lookup.size} strings)")
        return self._lookup[codes]

    def pending(self) -> list[tuple[int, str]]:
        return [(i, self.values[i]) for i in range(self.persisted, len(self.values))]

    def truncate(self, size: int) -> None:
        """Forget codes past `size` (used by readers re-replaying a new log)."""
        for s in self.values[size:]:
            del self.codes[s]
        del self.values[size:]
        self._lookup = None


def add_events(mem: MemTable, dicts: dict[str, StringDict], keys: Sequence[Any],
               counts: Sequence[int], ts: np.ndarray, cols: dict[str, np.ndarray], *,
               end: int = 0, seal_at: int = 0) -> list[Any]:
    """Add validated, user-grouped events (string columns as str) to `mem` as codes; `end` is
    the log offset after their record. Returns the keys whose tail reached `seal_at`."""
    coded = {name: (dicts[name].encode(arr) if name in dicts else arr)
             for name, arr in cols.items()}
    return mem.add_grouped(keys, counts, ts, coded, end=end, seal_at=seal_at)
