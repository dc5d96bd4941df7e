"""The read path, whole: argument checks, retention, which sources hold a user's wanted events,
decoding them, and assembling the answer; plus `user_events`, the one "decode a user's extents,
fill missing columns, stable-sort" used by bulk load and merge.

Functions over the index snapshot and memtable tail that `SeqVault.read` takes under its lock;
the only I/O is `decode_extent`'s pread. The algorithm: docs/design/architecture.md ("Reads").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CorruptionError, ValidationError
from .files import ExtentFiles
from .index import Extent, HashIndex, user_hash
from .memtable import StringDict, UserTail
from .schema import Schema, retention_cutoff
from .segment import (
    TIME_COLUMN_ID,
    decode_segment,
    decode_segment_aligned,
    key_bytes,
    key_from_bytes,
    parse_header,
)

if TYPE_CHECKING:
    from .segcache import SegmentCache

# Dictionary code standing for "column absent from this segment" (reads back the default).
MISSING_CODE = 0xFFFF_FFFF


class UserSequence(Mapping[str, np.ndarray]):
    """One user's events: a mapping of column name → numpy array, ascending by timestamp.

    ``len(seq)`` is the number of events (not the number of columns); iterate for column names.
    String columns are numpy unicode arrays (dtype ``<U…``): a fixed-width copy per read,
    several times cheaper than object arrays of Python strings.
    """

    __slots__ = ("user_id", "columns", "count", "dictionaries")

    def __init__(self, user_id: Any, columns: dict[str, np.ndarray], count: int,
                 dictionaries: dict[str, np.ndarray] | None = None) -> None:
        self.user_id = user_id
        self.columns = columns
        self.count = count
        # Only for reads with strings="codes": column → array mapping code → string.
        self.dictionaries = dictionaries

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return self.count

    def keys(self):  # type: ignore[override]
        return self.columns.keys()

    def to_dict(self) -> dict[str, list[Any]]:
        return {k: v.tolist() for k, v in self.columns.items()}

    def __repr__(self) -> str:
        return f"UserSequence(user_id={self.user_id!r}, count={self.count}, columns={list(self.columns)})"


class ForeignSegment(CorruptionError):
    """A segment at the asked key's slot holds another key (`owner`, its bytes). When `owner`
    owns that slot (`slot_of(owner)` is it) the asked key was never published at its default
    slot: it has no sealed events (docs/format/index.md, "Slot hashes"). Otherwise the index
    is damaged."""

    def __init__(self, message: str, owner: bytes) -> None:
        super().__init__(message)
        self.owner = owner


def _show_key(key: Any, raw: bytes) -> str:
    """Another user's key bytes, shown as a key of the asked key's type (repr of the bytes
    if they do not decode)."""
    try:
        return repr(key_from_bytes(key_bytes(key)[0], raw))
    except (UnicodeDecodeError, ValueError, TypeError):
        return repr(raw)


class Where:
    """Names an extent in error messages, built only if one is raised: formatting the file's
    path on every read cost more than the pread (profiled on last-100 reads)."""

    __slots__ = ("files", "file", "off", "key")

    def __init__(self, files: ExtentFiles, file: int, off: int, key: Any) -> None:
        self.files, self.file, self.off, self.key = files, file, off, key

    def __str__(self) -> str:
        return f"{self.files.path(self.file)} @ {self.off} (user {self.key!r})"


@dataclass(slots=True)
class Source:
    """One place a user's events live: a sealed extent, or the memtable tail."""

    order: int  # arrival order: older sources first
    count: int
    min_ts: int
    max_ts: int
    extent: Extent | None = None
    mem: tuple[np.ndarray, dict[str, np.ndarray]] | None = None



def choose_sources(sources: list[Source], last: int | None, before: int | None,
                    since: int | None) -> list[Source]:
    """Drop sources that cannot hold a wanted event (docs/design/architecture.md, "Reads").

    Time filters drop sources outside [since, before). For `last`, visit sources newest-max
    first; once `last` events are *certain* to be newer than everything not yet visited
    (whole sources inside the window whose min_ts is above the next max_ts), stop.
    """
    cands = [s for s in sources
             if not (since is not None and s.max_ts < since)
             and not (before is not None and s.min_ts >= before)]
    if last is None or len(cands) <= 1:
        return cands
    by_max = sorted(cands, key=lambda s: s.max_ts, reverse=True)
    chosen: list[Source] = []
    for s in by_max:
        sure = sum(c.count for c in chosen
                   if c.min_ts > s.max_ts
                   and (before is None or c.max_ts < before)
                   and (since is None or c.min_ts >= since))
        if sure >= last:
            break
        chosen.append(s)
    chosen.sort(key=lambda s: s.order)
    return chosen


def newest_sources(sources: list[Source], last: int) -> list[Source] | None:
    """The short read's plan (docs/design/realtime.md, "Short reads"): the newest sources, in
    arrival order, whose concatenation ends with the answer to "the newest `last`", or None
    when time order and arrival order disagree (late events) and the general path must merge.

    Walking newest arrival first, a source joins while fewer than `last` events are chosen;
    the plan holds when each chosen source ends no later than the next newer one starts and
    no source left out ends after the oldest chosen one starts (equal timestamps are fine:
    the older arrival sorts first, as the answer's tie rule wants)."""
    n = len(sources)
    i = n
    have = 0
    lo: int | None = None  # min_ts of the oldest chosen source
    while i > 0 and have < last:
        s = sources[i - 1]
        if lo is not None and s.max_ts > lo:
            return None
        have += s.count
        lo = s.min_ts
        i -= 1
    if lo is None:
        return sources[:0]
    for s in sources[:i]:
        if s.max_ts > lo:
            return None
    return sources[i:]


def _column_plan(schema: Schema, names: list[str]) -> tuple[tuple[Any, ...], tuple[int, ...]]:
    """(event columns, their ids with the time column's first) of a read's names, cached per
    schema object: building them cost a few µs per short read."""
    key = (id(schema), tuple(names))
    got = _COLUMN_PLANS.get(key)
    if got is None or got[0] is not schema:
        if len(_COLUMN_PLANS) > 64:
            _COLUMN_PLANS.clear()
        cols = tuple((c, c.name, c.id, c.is_string, c.dtype, c.default)
                     for c in (schema.column(n) for n in names if n != schema.time_column))
        got = _COLUMN_PLANS[key] = (schema, cols, (TIME_COLUMN_ID, *(c[2] for c in cols)))
    return got[1], got[2]


# (id(schema), names) -> (schema, event columns, column ids); the schema is kept so that an
# id reused by a new object is never mistaken for the old one.
_COLUMN_PLANS: dict[tuple[int, tuple[str, ...]], tuple[Schema, tuple[Any, ...], tuple[int, ...]]] = {}


def assemble_newest(files: ExtentFiles, key: Any, kb: bytes, schema: Schema,
                    dicts: Mapping[str, StringDict], chosen: list[Source], names: list[str],
                    last: int, codes: bool) -> UserSequence:
    """`assemble` for a plan of `newest_sources`: each source gives only its newest rows and
    the answer is their concatenation, so there is no sort and no search. Same answers as
    `assemble` (tests/engine/test_short_reads.py compares them)."""
    if not chosen:
        return assemble(files, key, kb, schema, dicts, chosen, names, last, None, None,
                        codes=codes)
    if len(chosen) == 1 and files.cache is not None and chosen[0].extent is not None:
        one = _newest_cached(files.cache, chosen[0].extent, key, kb, schema, names, last, codes)
        if one is not None:
            return one
    cols, ids = _column_plan(schema, names)
    need = last
    ts_parts: list[np.ndarray] = []
    col_parts: list[list[np.ndarray]] = [[] for _ in cols]
    for src in reversed(chosen):  # newest first
        rows = src.count if src.count <= need else need
        need -= rows
        if src.mem is not None:
            ts_m, mcols = src.mem
            lo = ts_m.size - rows
            ts_parts.append(ts_m[lo:])
            for parts, c in zip(col_parts, cols):
                parts.append(mcols[c[1]][lo:])
            continue
        assert src.extent is not None
        ts, got = decode_newest(files, src.extent, kb, key, ids, rows)
        ts_parts.append(ts)
        for parts, c, a in zip(col_parts, cols, got):
            if a is None:  # a column added after this segment was written
                a = np.full(ts.size, MISSING_CODE if c[3] else c[5], dtype=c[4])
            parts.append(a)
    if len(ts_parts) == 1:
        ts_all = ts_parts[0]
        picked = [parts[0] for parts in col_parts]
    else:
        ts_all = np.concatenate(ts_parts[::-1])
        picked = [np.concatenate(parts[::-1]) for parts in col_parts]
    out: dict[str, np.ndarray] = {}
    dictionaries: dict[str, np.ndarray] = {}
    it = iter(zip(cols, picked))  # event columns in the order of `names`
    for n in names:
        if n == schema.time_column:
            out[n] = ts_all
            continue
        c, a = next(it)
        if c[3] and codes:
            lookup = dicts[n].lookup()
            absent = a == MISSING_CODE
            if absent.any():  # old segments without the column: the default, as a new code
                lookup = np.append(lookup, np.array([c[5]], dtype=np.str_))
                a = np.where(absent, np.uint32(lookup.size - 1), a)
            dictionaries[n] = lookup
        elif c[3]:
            a = dicts[n].decode(a, missing=c[5])
        out[n] = a
    return UserSequence(key, out, int(ts_all.size), dictionaries if codes else None)


def _newest_cached(cache: SegmentCache, ext: Extent, key: Any, kb: bytes, schema: Schema,
                   names: list[str], last: int, codes: bool) -> UserSequence | None:
    """`assemble_newest` of one extent whose decoded columns the cache holds, with no string
    column asked for: each column's newest rows copied straight into the answer, or None
    (the general path then runs). A read of the last 100 of a merged user is mostly this:
    ~10 us on the 2-core machine, of which the general path's per-column lists and loops
    were ~2 us (docs/design/realtime.md, "A short read from the cache in one step")."""
    plan = _plain_plan(schema, names)
    if plan is None:
        return None
    hit = cache.get(ext.file, ext.off, ext.length)
    if hit is None or hit.key != kb or hit.count != ext.count:
        return None
    lo = hit.count - last if hit.count > last else 0
    got = hit.cols
    out: dict[str, np.ndarray] = {}
    for name, cid in plan:
        a = hit.ts if cid == TIME_COLUMN_ID else got.get(cid)
        if a is None:  # not decoded yet, or a column added after this segment
            return None
        out[name] = a[lo:].copy()
    return UserSequence(key, out, hit.count - lo, {} if codes else None)


def _plain_plan(schema: Schema, names: list[str]) -> tuple[tuple[str, int], ...] | None:
    """(name, column id) of a read's names, or None when one is a string column (those are
    decoded through the dictionary by the general path); cached like `_column_plan`."""
    key = (id(schema), tuple(names))
    got = _PLAIN_PLANS.get(key)
    if got is None or got[0] is not schema:
        if len(_PLAIN_PLANS) > 64:
            _PLAIN_PLANS.clear()
        ids = [TIME_COLUMN_ID if n == schema.time_column else schema.column(n).id
               for n in names]
        plain = None if any(schema.column(n).is_string for n in names
                            if n != schema.time_column) else tuple(zip(names, ids))
        got = _PLAIN_PLANS[key] = (schema, plain)
    return got[1]


_PLAIN_PLANS: dict[tuple[int, tuple[str, ...]], tuple[Schema, tuple[tuple[str, int], ...] | None]] = {}


def decode_newest(files: ExtentFiles, ext: Extent, kb: bytes, key: Any, ids: tuple[int, ...],
                  rows: int) -> tuple[np.ndarray, tuple[np.ndarray | None, ...]]:
    """`decode_extent` for a short read: (ts, the other columns aligned with ids[1:], None
    where the segment lacks one), the newest `rows` of each. Same checks (I1–I6)."""
    cache = files.cache
    if cache is not None:
        hit = cache.get(ext.file, ext.off, ext.length)
        if (hit is not None and hit.key == kb and hit.count == ext.count
                and all(c in hit.cols for c in ids[1:])):
            lo = hit.count - rows
            return hit.ts[lo:].copy(), tuple(
                None if (a := hit.cols[c]) is None else a[lo:].copy() for c in ids[1:])
    where: Any = Where(files, ext.file, ext.off, key)
    buf = files.pread(ext.file, ext.off, ext.length)
    try:
        # With a cache, decode every row once (the entry serves any later `rows`).
        info, got = decode_segment_aligned(buf, ids, rows if cache is None else ext.count,
                                           where=where)
        if info.key != kb:
            raise ForeignSegment(f"{where}: segment belongs to another user "
                                 f"({_show_key(key, info.key)}): a misdirected extent", info.key)
        if info.events != ext.count:
            raise CorruptionError(f"{where}: segment holds {info.events} events, the index "
                                  f"says {ext.count}")
        ts = got[0]
        if ts is None:  # I3
            raise CorruptionError(f"{where}: no time column")
    except CorruptionError as exc:
        exc.path = str(files.path(ext.file))
        exc.user = key
        raise
    if cache is None:
        return ts, got[1:]
    cache.put(ext.file, ext.off, ext.length, kb, info.events, ts, dict(zip(ids[1:], got[1:])))
    lo = info.events - rows
    return ts[lo:].copy(), tuple(None if a is None else a[lo:].copy() for a in got[1:])


def decode_extent(files: ExtentFiles, ext: Extent, kb: bytes, key: Any, col_ids: list[int],
                  rows: int | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Read and verify one extent (segment invariants I1–I6) and decode the asked-for
    columns; returns (ts, {col_id: values}). `rows`: only the newest `rows` events."""
    cache = files.cache
    if cache is not None:
        hit = cache.get(ext.file, ext.off, ext.length)
        if (hit is not None and hit.key == kb and hit.count == ext.count
                and all(c in hit.cols for c in col_ids)):
            return _from_entry(hit.ts, hit.cols, col_ids, rows)
    where: Any = Where(files, ext.file, ext.off, key)
    buf = files.pread(ext.file, ext.off, ext.length)
    try:
        info, cols = decode_segment(buf, [TIME_COLUMN_ID, *col_ids], where=where,
                                    rows=rows if cache is None else None)
        if info.key != kb:
            raise ForeignSegment(f"{where}: segment belongs to another user "
                                 f"({_show_key(key, info.key)}): a misdirected extent", info.key)
        if info.events != ext.count:
            raise CorruptionError(f"{where}: segment holds {info.events} events, the index "
                                  f"says {ext.count}")
    except CorruptionError as exc:
        exc.path = str(files.path(ext.file))
        exc.user = key
        raise
    ts = cols.pop(TIME_COLUMN_ID)
    if cache is None:
        return ts, cols
    cache.put(ext.file, ext.off, ext.length, kb, info.events, ts,
              {c: cols.get(c) for c in col_ids})
    return _from_entry(ts, cols, col_ids, rows)


def _from_entry(ts: np.ndarray, cols: Mapping[int, np.ndarray | None], col_ids: list[int],
                rows: int | None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Copies of the newest `rows` (None: all) of a cached segment's columns, in
    `decode_extent`'s shape (ids the segment lacks are left out)."""
    lo = 0 if rows is None else max(ts.size - rows, 0)
    out = {}
    for c in col_ids:
        a = cols.get(c)
        if a is not None:
            out[c] = a[lo:].copy()
    return ts[lo:].copy(), out


def newest_rows(chosen: list[Source], last: int | None, before: int | None,
                since: int | None, keep: int | None) -> list[int | None]:
    """How many of each chosen source's newest events the answer can use (None: all).

    Only when the answer is plainly "the newest `last`": the sources follow each other in
    time (so the answer is their concatenation's tail) and no time bound cuts inside one.
    Then a source needs only `last` minus what the newer sources hold; a decoder skips the
    rest (the compiled one never widens them at all)."""
    if (last is None or keep is not None
            or any(a.max_ts > b.min_ts for a, b in zip(chosen, chosen[1:]))
            or any((since is not None and s.min_ts < since)
                   or (before is not None and s.max_ts >= before) for s in chosen)):
        return [None] * len(chosen)
    out: list[int | None] = []
    newer = 0
    for s in reversed(chosen):
        out.append(min(s.count, max(int(last) - newer, 0)))
        newer += s.count
    out.reverse()
    return out


def assemble(files: ExtentFiles, key: Any, kb: bytes, schema: Schema,
             dicts: Mapping[str, StringDict], chosen: list[Source], names: list[str],
             last: int | None, before: int | None, since: int | None, keep: int | None = None,
             codes: bool = False) -> UserSequence:
    """Decode the chosen sources and merge them into the answer: ascending ts (ties in arrival
    order), the time window, the newest `last`, string columns decoded (or left as codes)."""
    event_cols = [schema.column(n) for n in names if n != schema.time_column]
    ids = [c.id for c in event_cols]
    ts_parts: list[np.ndarray] = []
    col_parts: dict[str, list[np.ndarray]] = {c.name: [] for c in event_cols}
    for src, rows in zip(chosen, newest_rows(chosen, last, before, since, keep)):
        if src.mem is not None:
            ts, mcols = src.mem
            ts_parts.append(ts)
            for c in event_cols:
                col_parts[c.name].append(mcols[c.name])
            continue
        assert src.extent is not None
        ts, by_id = decode_extent(files, src.extent, kb, key, ids, rows)
        ts_parts.append(ts)
        for c in event_cols:
            got = by_id.get(c.id)
            if got is None:  # a column added after this segment was written
                got = np.full(ts.size, MISSING_CODE if c.is_string else c.default,
                              dtype=c.dtype)
            col_parts[c.name].append(got)
    if not ts_parts:
        str_dtype = np.uint32 if codes else np.str_
        empty = {n: (np.zeros(0, dtype=np.int64) if n == schema.time_column else
                     np.zeros(0, dtype=str_dtype if schema.column(n).is_string
                              else schema.column(n).dtype)) for n in names}
        return UserSequence(key, empty, 0, {n: dicts[n].lookup() for n in names
                                            if n in dicts} if codes else None)
    if all(a.max_ts <= b.min_ts for a, b in zip(chosen, chosen[1:])):
        # Every source is sorted (segments by construction, the memtable tail by its cached
        # sorted view) and these follow each other in time and in arrival order (the common
        # case: events arrive roughly in time order): concatenation is already the answer.
        order = None
        ts_all = ts_parts[0] if len(ts_parts) == 1 else np.concatenate(ts_parts)
        if len(ts_parts) > 1:
            col_parts = {k: [np.concatenate(v)] for k, v in col_parts.items()}
    else:
        ts_cat = np.concatenate(ts_parts)
        order = np.argsort(ts_cat, kind="stable")  # stable: ties keep arrival order
        ts_all = ts_cat[order]
    lo = 0 if since is None else int(np.searchsorted(ts_all, since, side="left"))
    hi = ts_all.size if before is None else int(np.searchsorted(ts_all, before, side="left"))
    if keep is not None:  # retention window: the newest `keep` at or after `since`
        lo = max(lo, int(ts_all.size) - int(keep))
    if last is not None:
        lo = max(lo, hi - int(last))
    lo = min(lo, hi)
    dictionaries: dict[str, np.ndarray] = {}
    out: dict[str, np.ndarray] = {}
    for n in names:
        if n == schema.time_column:
            out[n] = ts_all[lo:hi]
            continue
        parts = col_parts[n]
        picked = parts[0][lo:hi] if order is None else np.concatenate(parts)[order[lo:hi]]
        col = schema.column(n)
        if col.is_string and codes:
            lookup = dicts[n].lookup()
            absent = picked == MISSING_CODE
            if absent.any():  # old segments without the column: the default, as a new code
                lookup = np.append(lookup, np.array([col.default], dtype=np.str_))
                picked = np.where(absent, np.uint32(lookup.size - 1), picked)
            dictionaries[n] = lookup
        elif col.is_string:  # decode only the rows we return
            picked = dicts[n].decode(picked, missing=col.default)
        out[n] = picked
    return UserSequence(key, out, hi - lo, dictionaries if codes else None)


# ---------------------------------------------------------------------- the front of a read
def check_read_args(schema: Schema, last: Any, columns: Any, before: Any, since: Any
                    ) -> list[str]:
    """Validate a read's arguments; returns the column names to return."""
    if last is not None and (isinstance(last, bool) or not isinstance(last, int | np.integer)
                             or last <= 0):
        raise ValidationError(f"last: {last!r} must be a positive integer", column="last",
                              value=last)
    for name, v in (("before", before), ("since", since)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer)):
            raise ValidationError(f"{name}: {v!r} must be an integer timestamp in "
                                  f"{schema.time_unit}", column=name, value=v)
    all_names = schema.column_names
    if columns is None:
        return all_names
    if isinstance(columns, str):
        columns = [columns]
    unknown = [c for c in columns if c not in all_names]
    if unknown:
        raise ValidationError(f"columns: unknown column(s) {unknown}; the schema has "
                              f"{all_names}", column=unknown[0])
    return list(dict.fromkeys(columns))


@dataclass
class ReadPlan:
    """A checked read: what to return, and the window after retention."""

    names: list[str]
    last: int | None
    before: int | None
    since: int | None
    keep: int | None  # with `before`: the retention window's size, found first (as merge would)
    codes: bool


def plan_read(schema: Schema, last: Any, columns: Any, before: Any, since: Any,
              strings: str) -> ReadPlan:
    """The checked plan of a read. A plain "last N of every column" read's plan depends only
    on the schema and N (without `max_age`, whose cutoff moves with the clock): it is kept and
    shared (plans are never changed after this), ~1 us less per short read."""
    plain = (columns is None and before is None and since is None and strings == "decode"
             and type(last) is int and last > 0 and schema.retention.max_age is None)
    if not plain:
        return _plan_read(schema, last, columns, before, since, strings)
    key = (id(schema), last)
    got = _PLANS.get(key)
    if got is None or got[0] is not schema:
        if len(_PLANS) > 256:
            _PLANS.clear()
        got = _PLANS[key] = (schema, _plan_read(schema, last, None, None, None, strings))
    return got[1]


# (id(schema), last) -> (schema, plan) of plain reads; the schema is kept as in _COLUMN_PLANS.
_PLANS: dict[tuple[int, int], tuple[Schema, ReadPlan]] = {}


def _plan_read(schema: Schema, last: Any, columns: Any, before: Any, since: Any,
               strings: str) -> ReadPlan:
    if strings not in ("decode", "codes"):
        raise ValidationError(f"strings: {strings!r} is not 'decode' or 'codes'",
                              column="strings", value=strings)
    names = check_read_args(schema, last, columns, before, since)
    # Retention keeps the newest max_events (of those not older than max_age) whatever
    # `before` asks: with `before`, find that window first (`keep`), as merge would.
    r = schema.retention
    keep = r.max_events if before is not None else None
    if r.max_events is not None:
        last = r.max_events if last is None else min(int(last), r.max_events)
    cutoff = retention_cutoff(schema)
    if cutoff is not None:
        since = cutoff if since is None else max(int(since), cutoff)
    return ReadPlan(names, last, before, since, keep, strings == "codes")


def sources_of(extents: Sequence[Extent], tail: UserTail | None) -> list[Source]:
    """A user's sources in arrival order: sealed extents (the index lists them newest first),
    then the memtable tail. holds: the store lock (the tail's arrays are then immutable)."""
    sources = [Source(i, e.count, e.min_ts, e.max_ts, extent=e)
               for i, e in enumerate(reversed(extents))]
    if tail is not None and tail.count:
        ts_m, cols_m = tail.sorted_arrays()
        sources.append(Source(len(sources), int(ts_m.size), int(ts_m.min()), int(ts_m.max()),
                              mem=(ts_m, cols_m)))
    return sources


def plain_newest(plan: ReadPlan) -> bool:
    """Whether the read is a plain "newest N" (no time window, no retention window)."""
    return (plan.last is not None and plan.keep is None and plan.before is None
            and plan.since is None)


def newest_plan(index: HashIndex, h: int, tail: UserTail | None, last: int
                ) -> list[Source] | None:
    """`newest_sources(sources_of(index.extents_of(h), tail), last)` without a `Source` or an
    `Extent` for the extents left out (docs/design/realtime.md, "Walking the extent list"):
    the same plan, or None where that gives None. holds: the store lock."""
    have, lo = 0, None
    mem: Source | None = None
    if tail is not None and tail.count:
        ts_m, cols_m = tail.sorted_arrays()
        mem = Source(0, int(ts_m.size), int(ts_m[0]), int(ts_m[-1]), mem=(ts_m, cols_m))
        have, lo = mem.count, mem.min_ts
    walk = index.newest_walk(index.find(h), last, have, lo)
    if walk is None:
        return None
    slots, n = walk
    out: list[Source] = []
    first = n - len(slots)  # arrival order of the oldest chosen extent
    for i, e in enumerate(reversed(slots)):
        x = index.extent_at(e)
        out.append(Source(first + i, x.count, x.min_ts, x.max_ts, extent=x))
    if mem is not None:
        mem.order = n
        out.append(mem)
    return out


# Above this many sources `choose_plan` hands over to `choose_sources` (its n² step would
# cost more than the objects it saves); at or below CHOOSE_OBJECTS_MAX it builds the objects
# and calls `choose_sources` too (thread CPU of the choice alone: 1 source 6 µs as objects
# against 13 µs in arrays, 8 sources 33 against 49, 16 sources 67 against 42, 68 sources
# 248 against 42).
CHOOSE_VECTOR_MAX = 512
CHOOSE_OBJECTS_MAX = 8


# `choose_plan` visits this many sources one by one (a last-N read usually stops after two or
# three) before it takes the whole-array step, whose cost grows with the square of the count.
VISITS_ONE_BY_ONE = 24


def _visits(by_max: np.ndarray, mn: np.ndarray, mx: np.ndarray, cnt: np.ndarray,
            inside: np.ndarray, last: int) -> int:
    """How many of `by_max` (source indices, newest max first) `choose_sources` visits before
    the sources already visited that surely hold newer events (min above the next one's max,
    `inside` the window) hold `last`."""
    k = min(by_max.size, VISITS_ONE_BY_ONE)
    o = by_max[:k].tolist()
    bmn, bmx, bcnt, ins = mn[o].tolist(), mx[o].tolist(), cnt[o].tolist(), inside[:k].tolist()
    for j in range(k):
        top = bmx[j]
        sure = 0
        for c in range(j):
            if ins[c] and bmn[c] > top:
                sure += bcnt[c]
        if sure >= last:
            return j
    if k == by_max.size:
        return k
    bmn_a, bmx_a = mn[by_max], mx[by_max]
    newer = (bmn_a[None, :] > bmx_a[:, None]) & inside[None, :]
    newer &= np.tri(by_max.size, k=-1, dtype=bool)  # only those visited before j
    sure_a = newer.astype(np.int64) @ cnt[by_max]
    stop = np.flatnonzero(sure_a >= last)
    return int(stop[0]) if stop.size else int(by_max.size)


def choose_plan(index: HashIndex, h: int, tail: UserTail | None, last: int | None,
                before: int | None, since: int | None) -> list[Source]:
    """`choose_sources(sources_of(index.extents_of(h), tail), last, before, since)` over the
    index arrays (docs/design/realtime.md, "Walking the extent list"): the same sources in
    the same order, with a `Source` and an `Extent` built only for the chosen ones.
    holds: the store lock."""
    slots = index.chain(index.find(h))
    slots.reverse()  # arrival order
    n_ext = len(slots)
    mem: Source | None = None
    if tail is not None and tail.count:
        ts_m, cols_m = tail.sorted_arrays()
        mem = Source(n_ext, int(ts_m.size), int(ts_m[0]), int(ts_m[-1]), mem=(ts_m, cols_m))
    n = n_ext + (mem is not None)
    if n > CHOOSE_VECTOR_MAX:
        return choose_sources(sources_of(index.extents_of(h), tail), last, before, since)
    if n <= CHOOSE_OBJECTS_MAX:  # a few sources: objects cost less than the array steps
        few = [Source(i, x.count, x.min_ts, x.max_ts, extent=x)
               for i, x in enumerate(map(index.extent_at, slots))]
        if mem is not None:
            few.append(mem)
        return choose_sources(few, last, before, since)
    sl = np.array(slots, dtype=np.intp)
    cnt = np.empty(n, dtype=np.int64)
    mn = np.empty(n, dtype=np.int64)
    mx = np.empty(n, dtype=np.int64)
    cnt[:n_ext] = index.e_count[sl]
    mn[:n_ext] = index.e_min[sl]
    mx[:n_ext] = index.e_max[sl]
    if mem is not None:
        cnt[n_ext], mn[n_ext], mx[n_ext] = mem.count, mem.min_ts, mem.max_ts
    cand = np.ones(n, dtype=bool)
    if since is not None:
        cand &= mx >= since
    if before is not None:
        cand &= mn < before
    ci = np.flatnonzero(cand)
    if last is not None and ci.size > 1:
        # Newest max first, ties in arrival order (a stable sort of -max, as `sorted(...,
        # reverse=True)` keeps them); source j is visited while the sources before it that
        # surely hold newer events (min above j's max, wholly inside the window) hold < last.
        by_max = ci[np.argsort(-mx[ci], kind="stable")]
        inside = np.ones(by_max.size, dtype=bool)
        if before is not None:
            inside &= mx[by_max] < before
        if since is not None:
            inside &= mn[by_max] >= since
        stop = _visits(by_max, mn, mx, cnt, inside, last)
        ci = np.sort(by_max[:stop])
    out: list[Source] = []
    for i in ci.tolist():
        if i == n_ext:
            assert mem is not None
            out.append(mem)
        else:
            x = index.extent_at(slots[i])
            out.append(Source(i, x.count, x.min_ts, x.max_ts, extent=x))
    return out


def read_sources(files: ExtentFiles, schema: Schema, dicts: Mapping[str, StringDict], key: Any,
                 kb: bytes, sources: list[Source], plan: ReadPlan,
                 planned: bool = False, prechosen: bool = False) -> UserSequence:
    """Choose, decode and assemble: the part of a read that runs without the store lock.
    `planned`: `sources` are already `newest_plan`'s plan for this (plain newest) read;
    `prechosen`: they are already `choose_plan`'s choice."""
    if planned:
        assert plan.last is not None
        return assemble_newest(files, key, kb, schema, dicts, sources, plan.names, plan.last,
                               plan.codes)
    if prechosen:
        return assemble(files, key, kb, schema, dicts, sources, plan.names, plan.last,
                        plan.before, plan.since, keep=plan.keep, codes=plan.codes)
    if plain_newest(plan):
        assert plan.last is not None
        newest = newest_sources(sources, plan.last)
        if newest is not None:
            return assemble_newest(files, key, kb, schema, dicts, newest, plan.names,
                                   plan.last, plan.codes)
    if plan.keep is not None:
        chosen = choose_sources(sources, plan.keep, None, plan.since)
    else:
        chosen = choose_sources(sources, plan.last, plan.before, plan.since)
    return assemble(files, key, kb, schema, dicts, chosen, plan.names, plan.last, plan.before,
                    plan.since, keep=plan.keep, codes=plan.codes)


# ---------------------------------------------------------------------- whole users
@dataclass
class UserEvents:
    """Every stored event of one user: ascending ts (ties in arrival order), every column of
    the schema by id; string columns as codes, MISSING_CODE where a segment predates the
    column (reads turn it into the default)."""

    key: Any
    kb: bytes
    ts: np.ndarray
    cols: dict[int, np.ndarray]
    bytes_read: int


def user_events(files: ExtentFiles, extents: Sequence[Extent], schema: Schema, *,
                expect_hash: int | None = None,
                slot_of: Callable[[bytes], int] = user_hash) -> UserEvents:
    """Decode `extents` (oldest first: arrival order) of one user and merge them.
    `expect_hash`: the index slot they were found under, checked against the segment key's
    slot (`slot_of`: the index's, which knows the aliases of colliding users)."""
    key: Any = None
    kb = b""
    if extents:  # the user's key, from the first segment's header
        first = extents[0]
        where = f"{files.path(first.file)} @ {first.off}"
        header = parse_header(files.pread(first.file, first.off, first.length), where=where)
        kb, key = header.key, key_from_bytes(header.key_type, header.key)
        if expect_hash is not None and slot_of(kb) != expect_hash:
            raise CorruptionError(f"{where}: segment key does not hash to the user's index "
                                  "entry", path=str(files.path(first.file)), user=key)
    ids = [c.id for c in schema.columns]
    ts_parts: list[np.ndarray] = []
    col_parts: dict[int, list[np.ndarray]] = {cid: [] for cid in ids}
    nbytes = 0
    for e in extents:
        ts, cols = decode_extent(files, e, kb, key, ids)
        ts_parts.append(ts)
        for c in schema.columns:
            got = cols.get(c.id)
            if got is None:  # a column added after this segment was written
                got = np.full(ts.size, MISSING_CODE if c.is_string else c.default,
                              dtype=np.uint32 if c.is_string else c.dtype)
            col_parts[c.id].append(got)
        nbytes += e.length
    if not ts_parts:
        return UserEvents(key, kb, np.zeros(0, np.int64),
                          {c.id: np.zeros(0, np.uint32 if c.is_string else c.dtype)
                           for c in schema.columns}, 0)
    ts_all = np.concatenate(ts_parts)
    colv = {cid: np.concatenate(parts) for cid, parts in col_parts.items()}
    if len(ts_parts) > 1 and bool((np.diff(ts_all) < 0).any()):
        order = np.argsort(ts_all, kind="stable")  # ties keep arrival order
        ts_all = ts_all[order]
        colv = {cid: a[order] for cid, a in colv.items()}
    return UserEvents(key, kb, ts_all, colv, nbytes)
