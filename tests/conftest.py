"""Shared fixtures, built from one place: the bundled schema (schema/behavior.toml) and the event
generator of `seqvault.sample`.

- `behavior_schema` (fixture) / `behavior_schema()` (helper): the bundled schema as shipped.
- `sample.events` / `sample.events_table`: behaviour-log events in that schema's columns.
- `SCHEMA_DICT` / `schema` / `make_events`: the engine tests' variation of the same log. It keeps
  the bundled key, time and item/action columns and adds a float32 and a bool column, types
  the bundled schema lacks, so every append, flush, merge and reopen test also runs the float
  and bool encoders; timestamps are small integers with bursts of ties (arrival order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from seqvault import Schema, sample


def behavior_schema_dict(columns: list[str] | None = None, *, extra: list[dict] | None = None,
                         user_type: str | None = None, unit: str | None = None) -> dict[str, Any]:
    """The bundled schema as a dict, without retention (tests use small synthetic timestamps).

    A test that needs a variation says so here: only the bundled `columns` named (with their
    types and defaults), then `extra` column dicts; another user key type or time unit."""
    d = sample.behavior_schema(retention=False).to_dict()
    bundled = {c["name"]: {k: c[k] for k in ("name", "type", "default")} for c in d["columns"]}
    cols = [bundled[n] for n in (columns if columns is not None else list(bundled))]
    user = {**d["user"], **({"type": user_type} if user_type else {})}
    time = {**d["time"], **({"unit": unit} if unit else {})}
    return {"user": user, "time": time, "columns": cols + list(extra or [])}


# The engine tests' variation: bundled key, time and item_id; an action vocabulary of their own
# (view, click, ...); float32 and bool columns, types the bundled schema lacks.
SCHEMA_DICT: dict[str, Any] = behavior_schema_dict(["item_id"], extra=[
    {"name": "action", "type": "string", "default": "view"},
    {"name": "dwell", "type": "uint32", "default": 0},
    {"name": "score", "type": "float32", "default": 0.0},
    {"name": "liked", "type": "bool", "default": False},
])
ACTIONS = ["view", "click", "like", "share"]


@pytest.fixture
def behavior_schema() -> Schema:
    """schema/behavior.toml as shipped (with its retention)."""
    return sample.behavior_schema()


@pytest.fixture
def schema() -> Schema:
    return Schema.from_dict(SCHEMA_DICT)


@pytest.fixture
def string_schema() -> Schema:
    d = dict(SCHEMA_DICT)
    d["user"] = {"column": "user_id", "type": "string"}
    return Schema.from_dict(d)


def make_events(rng: np.random.Generator, n: int, *, t0: int = 1_000_000, span: int = 10_000,
                ties: bool = True) -> dict[str, Any]:
    ts = rng.integers(t0, t0 + span, n)
    if ties and n > 3:
        ts[rng.integers(0, n, n // 3)] = t0 + span // 2  # bursts of equal timestamps
    return {
        "ts": ts,
        "item_id": rng.integers(0, 1 << 40, n),
        "action": [ACTIONS[i] for i in rng.integers(0, len(ACTIONS), n)],
        "dwell": rng.integers(0, 100_000, n).astype(np.uint32),
        "score": rng.random(n).astype(np.float32),
        "liked": rng.random(n) < 0.2,
    }


def expected_order(ts_lists: list[np.ndarray]) -> np.ndarray:
    """Ground truth: concatenate in arrival order, stable sort by ts."""
    return np.argsort(np.concatenate(ts_lists), kind="stable")


def native_required() -> bool:
    """CI must never silently test (or benchmark) the pure-Python decoder."""
    import os

    return os.environ.get("CI") == "true" or os.environ.get("SEQVAULT_REQUIRE_NATIVE") == "1"


@pytest.fixture(params=["native", "python"])
def decoder(request, monkeypatch) -> str:
    """Run a test once with each segment decoder (seqvault/native.py). The compiled one is
    skipped where it is not built, except under CI=true or SEQVAULT_REQUIRE_NATIVE=1."""
    from seqvault import native

    if request.param == "native":
        mod = native.load(honour_env=False)
        if mod is None:
            if native_required():
                pytest.fail("the compiled segment decoder is not built (CI requires it)")
            pytest.skip("the compiled segment decoder is not built")
        monkeypatch.setattr(native, "DECODER", mod)
    else:
        monkeypatch.setattr(native, "DECODER", None)
    return request.param


@pytest.fixture(params=["native", "python"])
def append_kernel(request, monkeypatch) -> str:
    """Run a test once with the compiled append kernel (seqvault/prepare.py) and once with the
    Python reference path; the kernel is skipped where it is not built, except under CI."""
    from seqvault import prepare

    if request.param == "native":
        mod = prepare.load(honour_env=False)
        if mod is None:
            if native_required():
                pytest.fail("the compiled append kernel is not built (CI requires it)")
            pytest.skip("the compiled append kernel is not built")
        monkeypatch.setattr(prepare, "KERNEL", mod)
    else:
        monkeypatch.setattr(prepare, "KERNEL", None)
    return request.param
