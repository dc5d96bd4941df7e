"""What the store explorer page shows, computed from a `SeqVault` through its public API only.

Pure functions: a vault (and request parameters) in, JSON-able dicts out; no HTTP here, so the
numbers the page shows can be tested without a browser. Every view is bounded in what it sends
however large the user is (docs/design/ui.md, "Bounded views"):

- `timeline`: the events of a time range as at most `MAX_POINTS` points, else as a
  lanes × `bins` count matrix (downsampled server-side), plus an activity histogram;
- `events_page`: one page (at most `MAX_PAGE` rows) of the events table, newest first, with a
  keyset cursor that is exact under bursts of equal timestamps;
- `point_in_time`: what `LaserReader` gives a model with `before=T` (lengths, padding, ages),
  with at most `MAX_PIT_ROWS` of its events listed;
- `overview`: `stats()`, the schema history and an estimate of compression per column.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import __version__
from ...laser_reader import LaserReader
from ...schema import TIME_UNITS, Schema
from ...segment import FORMAT_VERSION, encode_segment, parse_header
from ...vault import SeqVault

MAX_POINTS = 2_000  # up to this many events the timeline draws every event
DEFAULT_BINS = 240
MAX_BINS = 1_000
MAX_LANES = 8  # colour lanes: the most frequent values, the rest fold into "other"
MAX_PAGE = 500
MAX_PIT_ROWS = 50
MAX_PIT_LEN = 100_000
# The timeline reads at most this many events of a range (the newest); a store whose
# retention keeps more per user shows the newest million and says so.
TIMELINE_MAX_EVENTS = 1_000_000
MAX_ACTIVITY_BARS = 400
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
OTHER = "(other)"


class BadParam(ValueError):
    """A request parameter the page sent that cannot be served; the router makes it a 422."""

    def __init__(self, field: str, value: Any, expected: str) -> None:
        super().__init__(f"{field}: {value!r} {expected}")
        self.field = field
        self.value = value
        self.expected = expected


# ============================================================ formatting
def units_per_ms(schema: Schema) -> float:
    return TIME_UNITS[schema.time_unit] / 1000.0


def to_ms(schema: Schema, ts: np.ndarray) -> np.ndarray:
    """Store time units → float milliseconds (what the browser plots; exact for s and ms)."""
    return ts.astype(np.float64) / units_per_ms(schema)


def iso(schema: Schema, ts: int) -> str:
    """A timestamp as ISO 8601 UTC, to the precision of the store's unit."""
    per_s = TIME_UNITS[schema.time_unit]
    secs, frac = divmod(int(ts), per_s)
    try:
        base = dt.datetime.fromtimestamp(secs, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ts)
    digits = len(str(per_s)) - 1
    return base + (f".{frac:0{digits}d}" if digits else "")


def cell(value: Any) -> str:
    """One table cell as text. Integers stay exact (int64 ids above 2^53 would be rounded by a
    JSON number in JavaScript, so every cell travels as a string)."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, np.floating):
        return str(value)  # numpy's shortest repr of *its* width: float32 0.3 shows "0.3"
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def column_cells(values: np.ndarray) -> list[str]:
    if values.dtype.kind in "iu":
        return [str(v) for v in values.tolist()]
    if values.dtype.kind == "U":
        return values.tolist()
    return [cell(v) for v in values]


# ============================================================ timeline
@dataclass(frozen=True)
class Range:
    since: int | None
    before: int | None


def _lanes(schema: Schema, seq: Any, color: str | None, n: int
           ) -> tuple[list[str], np.ndarray]:
    """Lane labels (most frequent first, at most MAX_LANES, "(other)" last) and each event's lane."""
    if color is None or n == 0:
        return (["events"], np.zeros(n, dtype=np.int64))
    values = seq.columns[color]
    col = schema.column(color)
    if col.is_string:
        codes = values.astype(np.int64)
        lookup = seq.dictionaries[color]
        counts = np.bincount(codes, minlength=lookup.size)
        labels_of = lookup
    else:
        uniq, codes = np.unique(values, return_inverse=True)
        counts = np.bincount(codes, minlength=uniq.size)
        labels_of = np.array([cell(u) for u in uniq], dtype=object)
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    top = order[:MAX_LANES] if order.size <= MAX_LANES else order[:MAX_LANES - 1]
    lane_of = np.full(counts.size, len(top), dtype=np.int64)
    lane_of[top] = np.arange(len(top))
    labels = [str(labels_of[i]) for i in top]
    if order.size > len(top):
        labels.append(OTHER)
    return labels, lane_of[codes]


def _activity(ts_ms: np.ndarray, lo_ms: float, hi_ms: float) -> dict[str, Any]:
    """Events per hour or per day (whichever gives a readable number of bars) and per hour
    of day (UTC)."""
    span = max(hi_ms - lo_ms, 1.0)
    bucket = HOUR_MS if span <= 3 * DAY_MS else DAY_MS
    while span / bucket > MAX_ACTIVITY_BARS:
        bucket *= 7 if bucket == DAY_MS else 2  # days → weeks → fortnights ...
    start = np.floor(lo_ms / bucket) * bucket
    nbars = int(np.floor((hi_ms - start) / bucket)) + 1
    idx = np.clip(((ts_ms - start) // bucket).astype(np.int64), 0, nbars - 1)
    per = np.bincount(idx, minlength=nbars) if ts_ms.size else np.zeros(nbars, dtype=np.int64)
    hod = (np.bincount(((ts_ms // HOUR_MS) % 24).astype(np.int64), minlength=24)
           if ts_ms.size else np.zeros(24, dtype=np.int64))
    return {"bucket_ms": bucket, "start_ms": float(start), "counts": per.tolist(),
            "hour_of_day_utc": hod.tolist()}


def timeline(vault: SeqVault, user: Any, rng: Range, color: str | None,
             bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The events of `user` in [since, before) for the chart: points or binned lane counts."""
    schema = vault.schema
    if color is not None and (color == schema.time_column or color not in schema.by_name):
        raise BadParam("color", color, f"is not an event column; the schema has "
                       f"{[c.name for c in schema.columns]}")
    if not 1 <= bins <= MAX_BINS:
        raise BadParam("bins", bins, f"must be between 1 and {MAX_BINS}")
    tcol = schema.time_column
    names = [tcol] + ([color] if color else [])
    seq = vault.read(user, last=TIMELINE_MAX_EVENTS, columns=names, since=rng.since,
                     before=rng.before, strings="codes")
    n = seq.count
    ts = seq.columns[tcol]
    ts_ms = to_ms(schema, ts)
    labels, lane = _lanes(schema, seq, color, n)
    # The drawn range: the asked window where given, else the events' own span.
    upm = units_per_ms(schema)
    lo_ms = rng.since / upm if rng.since is not None else (float(ts_ms[0]) if n else 0.0)
    hi_ms = rng.before / upm if rng.before is not None else (float(ts_ms[-1]) + 1 if n else 1.0)
    if hi_ms <= lo_ms:
        hi_ms = lo_ms + 1.0
    out: dict[str, Any] = {
        "user": str(user), "count": n, "truncated": n >= TIMELINE_MAX_EVENTS,
        "time_unit": schema.time_unit, "units_per_ms": upm,
        "range_ms": [lo_ms, hi_ms],
        "first": str(int(ts[0])) if n else None, "last": str(int(ts[-1])) if n else None,
        "first_iso": iso(schema, int(ts[0])) if n else None,
        "last_iso": iso(schema, int(ts[-1])) if n else None,
        "color": color, "lanes": labels,
        "activity": _activity(ts_ms, lo_ms, hi_ms),
    }
    if n <= MAX_POINTS:
        out["mode"] = "points"
        out["points"] = {"t_ms": ts_ms.tolist(), "lane": lane.tolist()}
    else:
        width = (hi_ms - lo_ms) / bins
        b = np.clip(((ts_ms - lo_ms) / width).astype(np.int64), 0, bins - 1)
        counts = np.bincount(lane * bins + b, minlength=len(labels) * bins)
        out["mode"] = "bins"
        out["bins"] = {"n": bins, "width_ms": width,
                       "counts": counts.reshape(len(labels), bins).tolist()}
    return out


# ============================================================ events table
def parse_cursor(raw: str | None) -> tuple[int, int] | None:
    """`"<ts>:<k>"`: continue below ts, skipping the k newest events at exactly ts (already
    shown). Equal timestamps come in bursts, so a bare `before=ts` would skip some of them."""
    if raw is None or raw == "":
        return None
    ts_s, sep, k_s = raw.partition(":")
    try:
        ts, k = int(ts_s), int(k_s)
    except ValueError:
        raise BadParam("cursor", raw, "is not '<ts>:<count>' as the previous page gave it") \
            from None
    if not sep or k < 0:
        raise BadParam("cursor", raw, "is not '<ts>:<count>' as the previous page gave it")
    return ts, k


def events_page(vault: SeqVault, user: Any, rng: Range, columns: Sequence[str] | None,
                limit: int, cursor: tuple[int, int] | None) -> dict[str, Any]:
    """One page of the events in [since, before), newest first, as text cells."""
    schema = vault.schema
    if not 1 <= limit <= MAX_PAGE:
        raise BadParam("limit", limit, f"must be between 1 and {MAX_PAGE}")
    tcol = schema.time_column
    names = [tcol, *[c for c in (columns or schema.column_names) if c != tcol]]
    before, skip = rng.before, 0
    if cursor is not None:
        c_ts, skip = cursor
        before = c_ts + 1 if before is None else min(before, c_ts + 1)
    want = limit + skip
    seq = vault.read(user, last=want, columns=names, since=rng.since, before=before)
    n = seq.count
    keep = n - skip if skip <= n else 0  # ascending; the newest `skip` were shown already
    ts = seq.columns[tcol][:keep][::-1]
    cols = {name: column_cells(seq.columns[name][:keep][::-1]) for name in names}
    rows = [[cols[name][i] for name in names] for i in range(keep)]
    next_cursor = None
    if n >= want and keep:
        oldest = int(ts[-1])
        at_oldest = int(np.count_nonzero(ts == oldest))
        carried = skip if cursor is not None and oldest == cursor[0] else 0
        next_cursor = f"{oldest}:{at_oldest + carried}"
    # The same events through the public API: newest `want` below `before`, minus the `skip`
    # newest of them.
    api: dict[str, Any] = {"last": want, "columns": ",".join(names)}
    if before is not None:
        api["before"] = before
    if rng.since is not None:
        api["since"] = rng.since
    return {"user": str(user), "columns": names, "rows": rows,
            "iso": [iso(schema, int(t)) for t in ts.tolist()],
            "next_cursor": next_cursor, "api_params": api, "api_skip_newest": skip}


# ============================================================ point in time
def point_in_time(vault: SeqVault, user: Any, before: int, max_len: int,
                  columns: Sequence[str] | None) -> dict[str, Any]:
    """What a model gets with `LaserReader(vault, columns, max_len).read_batch([user],
    before=[before])`: how many real events, how much left padding, and the newest events
    with their ages and age buckets."""
    schema = vault.schema
    if not 1 <= max_len <= MAX_PIT_LEN:
        raise BadParam("max_len", max_len, f"must be between 1 and {MAX_PIT_LEN}")
    tcol = schema.time_column
    names = [tcol, *[c for c in (columns or schema.column_names) if c != tcol]]
    string_maps = {c: "store" for c in names if c != tcol and schema.column(c).is_string}
    reader = LaserReader(vault, columns=names, max_len=max_len, string_maps=string_maps)
    batch = reader.read_batch([user], before=before, request_time=before)
    length = int(batch.lengths[0])
    pad = int(batch.mask.shape[1]) - length
    shown = min(length, MAX_PIT_ROWS)
    # Left padding: the real events are the last `length` positions, the newest the last one.
    width = int(batch.mask.shape[1])
    positions = list(range(width - shown, width))[::-1]  # newest first
    seq = vault.read(user, last=shown, columns=names, before=before) if shown else None
    rows = []
    for j, pos in enumerate(positions):
        i = shown - 1 - j  # index into the ascending read
        row = {"position": pos,
               "age_ms": int(batch.age_ms[0, pos]) if batch.age_ms is not None else None,
               "age_bucket": (int(batch.age_bucket[0, pos])
                              if batch.age_bucket is not None else None),
               "model": [cell(batch.values[c][0, pos]) for c in names],
               "values": [cell(seq.columns[c][i]) for c in names] if seq is not None else []}
        rows.append(row)
    return {"user": str(user), "before": str(before), "before_iso": iso(schema, before),
            "max_len": max_len, "length": length, "padding": pad, "padding_side": "left",
            "mask_true": length, "columns": names, "string_columns": sorted(string_maps),
            "rows": rows, "rows_omitted": length - shown,
            "api_params": {"last": max_len, "before": before, "columns": ",".join(names)}}


# ============================================================ overview
@dataclass
class _Cached:
    key: Any
    at: float
    value: dict[str, Any]


class CompressionSampler:
    """Compression per column, estimated by re-encoding a sample of users' newest events with
    the segment codec (the store does not record stored bytes per column; see
    docs/design/ui.md). Cached for `ttl` seconds per store, not per commit: it costs a read and
    an encode of up to `sample_users` × `sample_events` events, and a store taking writes
    commits far more often than its compression changes."""

    def __init__(self, sample_users: int = 32, sample_events: int = 5_000,
                 ttl: float = 60.0) -> None:
        self.sample_users = sample_users
        self.sample_events = sample_events
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: _Cached | None = None

    def estimate(self, vault: SeqVault) -> dict[str, Any]:
        key = str(vault.path)
        with self._lock:
            c = self._cached
            if c is not None and c.key == key and time.monotonic() - c.at < self.ttl:
                return c.value
        value = self._measure(vault)
        with self._lock:
            self._cached = _Cached(key, time.monotonic(), value)
        return value

    def _measure(self, vault: SeqVault) -> dict[str, Any]:
        schema = vault.schema
        raw = {n: 0 for n in schema.column_names}
        stored = {n: 0 for n in schema.column_names}
        users = events = 0
        for user in vault.users():
            if users >= self.sample_users:
                break
            seq = vault.read(user, last=self.sample_events, strings="codes")
            if not seq.count:
                continue
            users += 1
            events += seq.count
            ts = seq.columns[schema.time_column]
            cols = [(c.id, c.type, np.ascontiguousarray(seq.columns[c.name], dtype=c.dtype),
                     c.level) for c in schema.columns]
            header = parse_header(encode_segment(user, schema.version, ts, cols))
            raw[schema.time_column] += ts.nbytes
            stored[schema.time_column] += header.columns[0].stored_len
            for c, (_cid, _t, values, _lvl) in zip(schema.columns, cols):
                raw[c.name] += values.nbytes
                stored[c.name] += header.columns[c.id].stored_len
        per_col = {n: {"raw_bytes": raw[n], "stored_bytes": stored[n],
                       "ratio": (raw[n] / stored[n]) if stored[n] else None,
                       "bytes_per_event": (stored[n] / events) if events else None}
                   for n in schema.column_names}
        return {"sample_users": users, "sample_events": events, "columns": per_col}


def overview(vault: SeqVault, sampler: CompressionSampler) -> dict[str, Any]:
    """Everything the store overview shows (JSON-able)."""
    if vault.read_only:
        vault.refresh()
    stats = vault.stats()
    schema = vault.schema
    history = vault.schema_history()
    compression = sampler.estimate(vault)
    events = int(stats.get("events", 0))
    disk = int(stats.get("disk_bytes", 0))
    columns = [{"name": schema.time_column, "type": f"timestamp ({schema.time_unit})",
                "default": None, "since_version": 1}]
    columns += [{"name": c.name, "type": c.type, "default": c.default,
                 "since_version": c.since_version} for c in schema.columns]
    for col in columns:
        col["compression"] = compression["columns"].get(col["name"])
    return {
        "path": stats.get("path"), "stats": stats,
        "bytes_per_event": (disk / events) if events else None,
        "data_bytes_per_event": (int(stats.get("data_bytes", 0)) / events) if events else None,
        "schema": {"version": schema.version, "user": f"{schema.user_column} ({schema.user_type})",
                   "columns": columns, "retention": schema.retention.to_dict(),
                   "history": [{"version": s.version,
                                "columns": [c.name for c in s.columns]} for s in history]},
        "compression_sample": {"users": compression["sample_users"],
                               "events": compression["sample_events"]},
        "versions": {"segment_format": FORMAT_VERSION, "schema": schema.version,
                     "seqvault": __version__},
        "generated_at": time.time(),
    }
