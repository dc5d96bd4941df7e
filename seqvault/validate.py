"""Input validation: turn user-supplied columns into arrays of the schema's types, or refuse.

Every check names the column, the row (0-based within the call) and the offending value, and
says what was expected. Validation happens before anything is written, so a refused call
leaves no trace (appends are atomic).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ValidationError
from .schema import TIME_UNITS, Column, Schema, retention_cutoff


def _fail(column: str, row: int | None, value: Any, expected: str) -> ValidationError:
    where = f"column {column!r}" + (f" row {row}" if row is not None else "")
    return ValidationError(f"{where}: value {value!r} {expected}", column=column, row=row,
                           value=value)


def _to_numpy(column: str, values: Any) -> np.ndarray:
    """Array-likes (lists, numpy, pyarrow arrays/chunked arrays, pandas series) → numpy."""
    if hasattr(values, "to_numpy") and hasattr(values, "null_count"):  # pyarrow
        if values.null_count:
            import pyarrow.compute as pc

            row = int(pc.index(pc.is_null(values), True).as_py())
            raise _fail(column, row, None, "is null (nulls are not allowed)")
        arr = values.to_numpy(zero_copy_only=False)
        return np.asarray(arr)
    if isinstance(values, np.ndarray):
        return values
    if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
        raise ValidationError(f"column {column!r}: expected a list or array of values, got "
                              f"{type(values).__name__}", column=column, value=values)
    try:
        return np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"column {column!r}: cannot read values as an array: {exc}",
                              column=column) from exc


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_none(column: str, arr: np.ndarray) -> None:
    if arr.dtype == object and None in arr.tolist():
        row = arr.tolist().index(None)
        raise _fail(column, row, None, "is None (missing values are not allowed)")


_LIMITS: dict[np.dtype[Any], tuple[int, int]] = {}


def _limits(target: np.dtype[Any]) -> tuple[int, int]:
    lim = _LIMITS.get(target)
    if lim is None:
        info = np.iinfo(target)
        lim = _LIMITS[target] = (int(info.min), int(info.max))
    return lim


def coerce_int(column: str, arr: np.ndarray, target: np.dtype[Any], *, lo: int | None = None,
               hi: int | None = None, expected: str | None = None) -> np.ndarray:
    tmin, tmax = _limits(target)
    lo = tmin if lo is None else lo
    hi = tmax if hi is None else hi

    def msg() -> str:
        return expected or f"does not fit {target.name} (expected an integer in {lo}..{hi})"

    if arr.dtype == object:
        _check_none(column, arr)
        for i, v in enumerate(arr):
            if isinstance(v, bool | np.bool_):
                continue
            if isinstance(v, int | np.integer):
                if not lo <= int(v) <= hi:
                    raise _fail(column, i, v, msg())
                continue
            if isinstance(v, float | np.floating):
                if not np.isfinite(v) or v != int(v) or not lo <= int(v) <= hi:
                    raise _fail(column, i, v, msg())
                continue
            raise _fail(column, i, v, f"is a {type(v).__name__}, not an integer")
        return np.array([int(v) for v in arr], dtype=target) if arr.size else arr.astype(target)
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(target)
    if kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            i = _first(bad)
            raise _fail(column, i, arr[i].item(), msg())
        frac = arr != np.floor(arr)
        if frac.any():
            i = _first(frac)
            raise _fail(column, i, arr[i].item(), f"is fractional; {msg()}")
        # Above 2**53 floats are coarse: float(2**63 - 1) == 2**63, so compare against hi + 1.
        over = (arr > hi) if hi < (1 << 53) else (arr >= float(hi + 1))
        out_of = (arr < lo) | over
        if out_of.any():
            i = _first(out_of)
            raise _fail(column, i, arr[i].item(), msg())
        return arr.astype(target)
    if kind in "iu":
        if arr.dtype == target and lo == tmin and hi == tmax:
            return arr  # the dtype is the range: no reduction needed (the common array append)
        if arr.size:
            # Compare in Python ints where int64/uint64 mix would lose precision.
            mn, mx = int(arr.min()), int(arr.max())
            if mn < lo or mx > hi:
                bad = (arr < lo) if mn < lo else (arr > hi)
                if arr.dtype.kind == "u" and mx > hi:
                    bad = arr > np.uint64(hi) if hi >= 0 else np.ones(arr.size, bool)
                i = _first(bad)
                raise _fail(column, i, arr[i].item(), msg())
        return arr.astype(target, copy=False)
    if kind in "US":
        i = 0
        raise _fail(column, i, arr[0].item() if arr.size else "", "is a string, not an integer")
    raise ValidationError(f"column {column!r}: dtype {arr.dtype} cannot be read as {target.name}",
                          column=column)


def coerce_float(column: str, arr: np.ndarray, target: np.dtype[Any], allow_nan: bool) -> np.ndarray:
    if arr.dtype == object:
        _check_none(column, arr)
        for i, v in enumerate(arr):
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise _fail(column, i, v, f"is a {type(v).__name__}, not a number")
        arr = arr.astype(np.float64)
    if arr.dtype.kind not in "iufb":
        raise _fail(column, 0, arr[0].item() if arr.size else None, f"is not a number ({arr.dtype})")
    out = arr.astype(target)
    if not allow_nan and out.dtype.kind == "f":
        bad = np.isnan(out)
        if bad.any():
            i = _first(bad)
            raise _fail(column, i, float("nan"), "is NaN (declare allow_nan = true to store NaN)")
    if arr.dtype.kind == "f" and target.itemsize < arr.dtype.itemsize:
        over = np.isinf(out) & np.isfinite(arr)
        if over.any():
            i = _first(over)
            raise _fail(column, i, arr[i].item(), f"overflows {target.name}")
    return out


def coerce_bool(column: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype == object:
        _check_none(column, arr)
        for i, v in enumerate(arr):
            if not isinstance(v, bool | np.bool_) and v not in (0, 1):
                raise _fail(column, i, v, "is not a bool (expected true/false or 0/1)")
        return arr.astype(bool)
    if arr.dtype.kind in "iuf":
        bad = (arr != 0) & (arr != 1)
        if bad.any():
            i = _first(bad)
            raise _fail(column, i, arr[i].item(), "is not a bool (expected true/false or 0/1)")
        return arr.astype(bool)
    raise _fail(column, 0, arr[0].item() if arr.size else None, "is not a bool")


def coerce_strings(column: str, arr: np.ndarray) -> np.ndarray:
    """String column → numpy object array of str (dictionary codes are assigned later)."""
    if arr.dtype.kind == "U":
        return arr.astype(object)
    if arr.dtype == object:
        values = arr.tolist()
        if not all(type(v) is str for v in values):
            for i, v in enumerate(values):
                if not isinstance(v, str):
                    what = "is None (missing values are not allowed)" if v is None else \
                        f"is a {type(v).__name__}, not a string"
                    raise _fail(column, i, v, what)
        return arr
    raise _fail(column, 0, arr[0].item() if arr.size else None,
                f"is not a string (column dtype {arr.dtype})")


def coerce_column(col: Column, values: Any) -> np.ndarray:
    if col.is_string and isinstance(values, list | tuple):
        # np.asarray(["a", 3]) would quietly turn 3 into "3"; keep the objects to check them.
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    else:
        arr = _to_numpy(col.name, values)
    if (arr.dtype.kind == "f" and col.dtype.kind in "iu" and not col.is_string
            and isinstance(values, list | tuple) and all(type(v) is int for v in values)):
        # numpy reads a list of ints on both sides of 2**63 as float64, rounding them (a uint64
        # id silently changed): keep the Python ints, checked exactly as objects.
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    if arr.ndim != 1:
        raise ValidationError(f"column {col.name!r}: expected a flat list, got shape {arr.shape}",
                              column=col.name)
    if col.is_string:
        return coerce_strings(col.name, arr)
    if col.type == "bool":
        return coerce_bool(col.name, arr)
    if col.type.startswith("float"):
        return coerce_float(col.name, arr, col.dtype, col.allow_nan)
    return coerce_int(col.name, arr, col.dtype)


def coerce_time(schema: Schema, values: Any, *, now: float | None = None,
                retention: bool = True) -> np.ndarray:
    """The time column as int64 in the schema's unit, or a ValidationError.

    Besides the type and range checks, two checks keep accepted events readable
    (docs/design/safety.md, "Nothing accepted silently disappears"): a timestamp that looks
    like a coarser unit than the column's (seconds written into a millisecond column) is
    refused, and so is one older than the retention window (`max_age` before `now`, wall
    clock seconds): reads would never return it and the next merge would delete it.
    `retention=False` leaves the retention check to the caller (ingest's `expired="drop"`).
    """
    name = schema.time_column
    arr = _to_numpy(name, values)
    if arr.dtype.kind == "M":  # numpy datetime64 → the schema's unit
        arr = arr.astype(f"datetime64[{schema.time_unit}]").astype(np.int64)
    if arr.ndim != 1:
        raise ValidationError(f"column {name!r}: expected a flat list, got shape {arr.shape}",
                              column=name)
    try:
        ts = coerce_int(name, arr, np.dtype(np.int64), lo=0, hi=schema.max_ts,
                        expected=f"is not a timestamp in {schema.time_unit} "
                                 f"(expected an integer in 0..{schema.max_ts})")
    except ValidationError as exc:
        hint = _finer_unit_hint(schema, exc.value)
        if hint:
            raise ValidationError(f"{exc}; {hint}", column=exc.column, row=exc.row,
                                  value=exc.value) from None
        raise
    if ts.size:
        check_time_plausible(schema, ts, now=now, retention=retention)
    return ts


# Epoch instants a behaviour log plausibly holds: 1990-01-01 .. 2100-01-01 (seconds). A value
# that is such an instant in a *coarser* unit than the column's reads, in the column's unit, as
# a moment in January or February 1970: the classic "seconds into a millisecond column" mistake.
PLAUSIBLE_EPOCH_S = (631_152_000, 4_102_444_800)


def _utc(ts: int, unit: str) -> str:
    import datetime as dt

    seconds = ts / TIME_UNITS[unit]
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def _finer_unit_hint(schema: Schema, value: Any) -> str | None:
    """For a value too large for the column's unit: does it read as a plausible instant in a
    finer unit (milliseconds written into a seconds column)?"""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        return None
    v, per_s = int(value), TIME_UNITS[schema.time_unit]
    lo, hi = PLAUSIBLE_EPOCH_S
    for unit, per in TIME_UNITS.items():
        if per > per_s and lo * per <= v <= hi * per:
            return (f"it looks like {_UNIT_NAMES[unit]} ({_utc(v, unit)}); convert it to "
                    f"{_UNIT_NAMES[schema.time_unit]} (divide by {per // per_s}) or declare the "
                    f'time unit "{unit}" in the schema')
    return None


_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def check_time_plausible(schema: Schema, ts: np.ndarray, *, now: float | None = None,
                         retention: bool = True) -> None:
    """Refuse timestamps in a coarser unit than the column's, and timestamps outside the
    retention window; the error names the column, the row, the value and what was expected."""
    name, unit = schema.time_column, schema.time_unit
    per_s = TIME_UNITS[unit]
    lo, hi = PLAUSIBLE_EPOCH_S
    mn = int(ts.min())
    if mn < lo * per_s:  # something before 1990 in the column's unit: look closer
        for coarse, per in TIME_UNITS.items():
            if per >= per_s:
                continue
            bad = (ts >= lo * per) & (ts <= hi * per)
            if bad.any():
                i = _first(bad)
                v = int(ts[i])
                raise _fail(name, i, v,
                            f"is {_utc(v, unit)} read as {_UNIT_NAMES[unit]}, but "
                            f"{_utc(v * (per_s // per), unit)} read as {_UNIT_NAMES[coarse]}: "
                            f"the time column holds {_UNIT_NAMES[unit]}; convert it (multiply "
                            f'by {per_s // per}) or declare the time unit "{coarse}" in the '
                            f"schema (`seqvault ingest --time-unit {coarse}` when it infers "
                            "one)")
    cutoff = retention_cutoff(schema, now) if retention else None
    if cutoff is not None:
        max_age = schema.retention.max_age or 0.0
        if mn < cutoff:
            i = _first(ts < cutoff)
            v = int(ts[i])
            raise _fail(name, i, v,
                        f"({_utc(v, unit)}) is older than the schema's retention "
                        f"max_age of {_age(max_age)} (expected {name} >= {cutoff}, "
                        f"{_utc(cutoff, unit)}): reads would never return it. Send recent "
                        "events, raise retention.max_age (`seqvault schema evolve`), or leave "
                        "such events out of a bulk load (`seqvault ingest --expired drop`)")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def coerce_user(schema: Schema, user: Any) -> int | str:
    """A single user key, checked against the schema's user type."""
    if schema.user_type == "string":
        if not isinstance(user, str):
            raise ValidationError(f"user id {user!r} is a {type(user).__name__}; this store's "
                                  f"user column {schema.user_column!r} is a string",
                                  column=schema.user_column, value=user)
        if len(user.encode("utf-8")) > 4096:
            raise ValidationError(f"user id of {len(user)} characters is longer than 4096 bytes",
                                  column=schema.user_column, value=user[:32] + "...")
        return user
    if isinstance(user, bool) or not isinstance(user, int | np.integer):
        raise ValidationError(f"user id {user!r} is a {type(user).__name__}; this store's user "
                              f"column {schema.user_column!r} is int64",
                              column=schema.user_column, value=user)
    u = int(user)
    if not -(1 << 63) <= u < (1 << 63):
        raise ValidationError(f"user id {u} does not fit int64", column=schema.user_column, value=u)
    return u


def coerce_users(schema: Schema, values: Any) -> np.ndarray:
    """The user column of a batch: int64 array, or object array of str."""
    name = schema.user_column
    if schema.user_type == "string" and isinstance(values, list | tuple):
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    else:
        arr = _to_numpy(name, values)
    if schema.user_type == "string":
        out = coerce_strings(name, arr)
        return out
    if arr.dtype.kind in "US":
        raise _fail(name, 0, arr[0].item() if arr.size else "", "is a string; user ids are int64")
    return coerce_int(name, arr, np.dtype(np.int64))


def validate_events(schema: Schema, columns: Mapping[str, Any], *,
                    skip: tuple[str, ...] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Check a columnar batch of events against the schema: every column present, no unknown
    column, equal lengths, every value fits. Returns (ts, {column: array})."""
    if not isinstance(columns, Mapping):
        raise ValidationError(f"events must be a mapping of column name to values, got "
                              f"{type(columns).__name__}")
    expected = set(schema.column_names) | set(skip)
    unknown = sorted(set(columns) - expected)
    if unknown:
        raise ValidationError(f"unknown column(s) {unknown}; the schema has {schema.column_names}",
                              column=unknown[0])
    missing = [c for c in schema.column_names if c not in columns]
    if missing:
        raise ValidationError(f"missing column(s) {missing}; every append needs all of "
                              f"{schema.column_names}", column=missing[0])
    small = _small_call(schema, columns)
    if small is not None:
        return small
    ts = coerce_time(schema, columns[schema.time_column])
    out: dict[str, np.ndarray] = {}
    for col in schema.columns:
        arr = coerce_column(col, columns[col.name])
        if arr.size != ts.size:
            raise ValidationError(
                f"column {col.name!r} has {arr.size} values but {schema.time_column!r} has "
                f"{ts.size}; all columns of one call must have the same length", column=col.name)
        out[col.name] = arr
    return ts, out


SMALL_CALL = 64  # rows: below this, plain Python checks beat numpy's per-call overhead


def _small_call(schema: Schema, columns: Mapping[str, Any]
                ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """The common online append (a few events as Python lists of ints and strs), checked in
    plain Python: about 5x cheaper than the numpy path for one event, which dominated the cost
    of `append` (docs/design/realtime.md). Returns None — the numpy path then runs, and gives
    the detailed error — for anything else: other containers, floats, bools, None, values out
    of range, ragged lengths."""
    ts_in = columns[schema.time_column]
    if type(ts_in) is not list or not 0 < len(ts_in) <= SMALL_CALL:
        return None
    n = len(ts_in)
    hi = schema.max_ts
    for v in ts_in:
        if type(v) is not int or not 0 <= v <= hi:
            return None
    out: dict[str, np.ndarray] = {}
    for col in schema.columns:
        values = columns[col.name]
        if type(values) is not list or len(values) != n:
            return None
        if col.is_string:
            for v in values:
                if type(v) is not str:
                    return None
            arr = np.empty(n, dtype=object)
            arr[:] = values
        elif col.dtype.kind in "iu":
            lo, top = _limits(col.dtype)
            for v in values:
                if type(v) is not int or not lo <= v <= top:
                    return None
            arr = np.array(values, dtype=col.dtype)
        else:
            return None
        out[col.name] = arr
    ts = np.array(ts_in, dtype=np.int64)
    if not _times_ok(schema, ts_in):
        check_time_plausible(schema, ts)
    return ts, out


def _times_ok(schema: Schema, values: list[int]) -> bool:
    """`check_time_plausible` for a few timestamps already known to be ints in 0..max_ts, in
    plain Python: True when it would pass for certain (False: run it, it names the problem)."""
    mn = min(values)
    if mn < PLAUSIBLE_EPOCH_S[0] * TIME_UNITS[schema.time_unit]:
        return False
    cutoff = retention_cutoff(schema)
    return cutoff is None or mn >= cutoff


def validate_append(schema: Schema, columns: Mapping[str, Any]
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`validate_events` for `append`, whose arrays go into the memtable: they never alias the
    caller's (a caller may reuse its buffers). A few events as lists or as numpy arrays of the
    columns' own dtypes — the online append — are checked in plain Python (`_small_owned`)."""
    fast = _small_owned(schema, columns)
    if fast is not None:
        return fast
    ts, cols = validate_events(schema, columns)
    return ts.copy(), {k: v.copy() for k, v in cols.items()}


def _small_owned(schema: Schema, columns: Any
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """A few events, each column a list (`_small_call`) or a 1-D numpy array of exactly the
    column's dtype (int columns: the dtype is the range; strings as str or object arrays of
    str): copies of them, or None — the general path then runs and names any problem."""
    if type(columns) is not dict or len(columns) != len(schema.columns) + 1:
        return None
    for col in schema.columns:
        if col.name not in columns:
            return None
    ts_in = columns.get(schema.time_column)
    if type(ts_in) is list:
        return _small_call(schema, columns)
    if (type(ts_in) is not np.ndarray or ts_in.dtype != np.int64 or ts_in.ndim != 1
            or not 0 < ts_in.size <= SMALL_CALL):
        return None
    n = ts_in.size
    times = ts_in.tolist()
    hi = schema.max_ts
    for v in times:
        if not 0 <= v <= hi:
            return None
    out: dict[str, np.ndarray] = {}
    for col in schema.columns:
        values = columns[col.name]
        if type(values) is not np.ndarray or values.shape != (n,):
            return None
        if col.is_string:
            if values.dtype.kind not in "UO":
                return None
            strs = values.tolist()
            for v in strs:
                if type(v) is not str:
                    return None
            arr = np.empty(n, dtype=object)
            arr[:] = strs
        elif col.dtype.kind in "iu" and values.dtype == col.dtype:
            arr = values.copy()
        else:
            return None
        out[col.name] = arr
    ts = ts_in.copy()
    if not _times_ok(schema, times):
        check_time_plausible(schema, ts)
    return ts, out


def validate_batch(schema: Schema, data: Any
                   ) -> tuple[list[Any], list[int], np.ndarray, dict[str, np.ndarray]]:
    """`append_batch`'s input (a pyarrow Table/RecordBatch, a pandas DataFrame or a mapping of
    columns with the user column) checked, and grouped by user: (keys, counts, ts, columns),
    each user's rows in call order (a stable sort)."""
    columns = _columns_of(data)
    ucol = schema.user_column
    if ucol not in columns:
        raise ValidationError(f"missing user column {ucol!r}; append_batch needs it",
                              column=ucol)
    users = coerce_users(schema, columns[ucol])
    ts, cols = validate_events(schema, {k: v for k, v in columns.items() if k != ucol})
    if users.size != ts.size:
        raise ValidationError(f"column {ucol!r} has {users.size} values but "
                              f"{schema.time_column!r} has {ts.size}", column=ucol)
    if ts.size == 0:
        return [], [], ts, cols
    order = np.argsort(users, kind="stable")
    grouped = users[order]
    bounds = np.flatnonzero(grouped[1:] != grouped[:-1]) + 1
    firsts = np.concatenate(([0], bounds))
    counts = np.diff(np.concatenate((firsts, [grouped.size])))
    return (grouped[firsts].tolist(), counts.tolist(), ts[order],
            {k: v[order] for k, v in cols.items()})


def _columns_of(data: Any) -> Mapping[str, Any]:
    if hasattr(data, "column_names") and hasattr(data, "column"):  # pyarrow Table / RecordBatch
        return {name: data.column(name) for name in data.column_names}
    if isinstance(data, Mapping):
        return data
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas DataFrame
        return {str(c): data[c].to_numpy() for c in data.columns}
    raise ValidationError(f"append_batch: expected a pyarrow Table, a RecordBatch or a mapping of "
                          f"columns, got {type(data).__name__}")
