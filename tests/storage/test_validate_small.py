"""The plain-Python check of small appends (validate._small_call) accepts exactly what the
numpy path accepts, returns the same arrays, and leaves every error to the numpy path (which
names column, row and value)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqvault import sample
from seqvault.errors import ValidationError
from seqvault.validate import SMALL_CALL, _small_call, validate_events

SCHEMA = sample.behavior_schema()
NOW = int(time.time() * 1000)


def call(n: int, **over) -> dict:
    cols = {"ts": [NOW - i for i in range(n)], "item_id": list(range(n)),
            "action": ["click"] * n, "category": [3] * n, "dwell_ms": [100] * n,
            "scenario": ["feed"] * n}
    cols.update(over)
    return cols


def numpy_path(cols: dict):
    # The same call as numpy arrays never takes the small path.
    return validate_events(SCHEMA, {k: np.asarray(v, dtype=object if isinstance(v[0], str)
                                                  else None) for k, v in cols.items()})


@settings(max_examples=60, deadline=None)
@given(st.integers(1, SMALL_CALL), st.data())
def test_small_path_returns_what_the_numpy_path_returns(n, data):
    items = data.draw(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=n, max_size=n))
    acts = data.draw(st.lists(st.sampled_from(["click", "like", "é", ""]), min_size=n,
                              max_size=n))
    cols = call(n, item_id=items, action=acts)
    fast = _small_call(SCHEMA, cols)
    assert fast is not None
    slow = numpy_path(cols)
    assert fast[0].dtype == slow[0].dtype and fast[0].tolist() == slow[0].tolist()
    for name, arr in slow[1].items():
        assert fast[1][name].dtype == arr.dtype and fast[1][name].tolist() == arr.tolist()


@pytest.mark.parametrize(("over", "column"), [
    ({"category": [70_000]}, "category"),  # uint16 overflow
    ({"dwell_ms": [-1]}, "dwell_ms"),
    ({"item_id": [1.5]}, "item_id"),
    ({"action": [3]}, "action"),
    ({"action": [None]}, "action"),
    ({"ts": [NOW // 1000]}, "ts"),  # seconds into a millisecond column
    ({"ts": ["x"]}, "ts"),
])
def test_bad_values_in_small_calls_get_the_detailed_error(over, column):
    cols = call(1, **over)
    with pytest.raises(ValidationError) as err:
        validate_events(SCHEMA, cols)
    assert err.value.column == column


def test_ragged_small_call_is_refused_by_name():
    with pytest.raises(ValidationError, match="dwell_ms"):
        validate_events(SCHEMA, call(2, dwell_ms=[1]))


def test_arrays_of_the_columns_own_dtype_pass_unchanged_and_others_are_checked():
    # An int column's own dtype is its range, so no reduction is needed (the common array
    # append); any other dtype is still range-checked.
    from seqvault.validate import coerce_int

    arr = np.array([0, 65_535], dtype=np.uint16)
    assert coerce_int("category", arr, np.dtype(np.uint16)) is arr
    with pytest.raises(ValidationError, match="category"):
        coerce_int("category", np.array([70_000], dtype=np.int64), np.dtype(np.uint16))
    with pytest.raises(ValidationError, match="ts"):  # a narrower range than the dtype
        coerce_int("ts", np.array([-1], dtype=np.int64), np.dtype(np.int64), lo=0)
