"""One append call checked, grouped by user and encoded as its log record's payload in a single
compiled call (seqvault/native_append.c), for the plain cases: columns as numpy arrays of
exactly the schema's dtypes or lists of Python ints, in-range values, plausible timestamps.
Anything else gets None here, and the reference path (validate.py, then wal.encode_append)
runs and names the problem. Both paths give the same arrays and byte-identical payloads
(tests/unit/test_native_append.py); the kernel cuts a one-event append's Python cost by about
more than half (docs/design/realtime.md, "Append kernel").

`SEQVAULT_NATIVE=0` in the environment switches the kernel off (read once, at import); tests
switch it by setting `KERNEL`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from . import native
from .schema import TIME_UNITS, Schema, retention_cutoff
from .validate import PLAUSIBLE_EPOCH_S

Prepared = tuple[list[Any], list[int], np.ndarray, dict[str, np.ndarray], bytes]


def load(*, honour_env: bool = True) -> ModuleType | None:
    """The compiled kernel, or None when switched off (`honour_env`) or not built."""
    return native.load_kernel(honour_env=honour_env)


KERNEL: ModuleType | None = load()

_OBJECT = np.dtype(object).num  # string columns: str objects in, as the Python path keeps them

# id(schema) → (schema, spec, lowest plausible ts, whether it has a max_age); a Schema is
# immutable, and keeping it here keeps its id from being reused while cached
_SPECS: dict[int, tuple[Schema, tuple[Any, ...], int, bool]] = {}


def _spec(schema: Schema) -> tuple[tuple[Any, ...], int]:
    got = _SPECS.get(id(schema))
    if got is None or got[0] is not schema:
        got = _new_spec(schema)
    return got[1], got[2]


def _new_spec(schema: Schema) -> tuple[Schema, tuple[Any, ...], int, bool]:
    cols = tuple((c.name, _OBJECT if c.is_string else c.dtype.num, bool(c.allow_nan))
                 for c in schema.columns)
    spec = (schema.version, schema.time_column, schema.max_ts, cols)
    floor = PLAUSIBLE_EPOCH_S[0] * TIME_UNITS[schema.time_unit]
    if len(_SPECS) > 64:  # schemas of closed stores: keep the cache small
        _SPECS.clear()
    got = _SPECS[id(schema)] = (schema, spec, floor, schema.retention.max_age is not None)
    return got


def call_spec(schema: Schema) -> tuple[tuple[Any, ...], int]:
    """(spec, min_ts) for the kernel's `prepare` and `append_call`: the schema's columns, and
    the lowest timestamp it takes now (the plausible floor, or retention's cutoff when later)."""
    got = _SPECS.get(id(schema))
    if got is None or got[0] is not schema:
        got = _new_spec(schema)
    min_ts = got[2]
    if got[3]:  # retention: older events are refused, and Python's path says so
        cutoff = retention_cutoff(schema)
        if cutoff is not None and cutoff > min_ts:
            min_ts = cutoff
    return got[1], min_ts


def prepare(schema: Schema, key: Any, users: Any, columns: Any) -> Prepared | None:
    """(keys, counts, ts, cols, payload) of an append call — `key`'s events when `users` is
    None, else a batch with `users` as its user column — or None (not a plain case, or no
    kernel): the caller then validates and encodes in Python."""
    kernel = KERNEL
    if kernel is None or type(columns) is not dict:
        return None
    if users is not None and schema.user_type == "string":
        return None
    spec, min_ts = call_spec(schema)
    out: Prepared | None = kernel.prepare(spec, key, users, columns, min_ts)
    return out
