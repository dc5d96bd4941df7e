"""Data helpers for the HTTP tests: the bundled schema, sample events and sample stores.

Plain functions (not fixtures) because some are needed at import time, in `parametrize`
lists. The real-uvicorn harness that serves these stores is in conftest.py, as fixtures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from seqvault import Schema, SeqVault

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "schema" / "behavior.toml"
ACTIONS = np.array(["impression", "click", "like", "collect", "share", "comment"], dtype=object)
SCENARIOS = np.array(["feed", "video", "search"], dtype=object)
TOKEN = "s3cret-token-for-tests"


def now_ms() -> int:
    return int(time.time() * 1000)


def events(n: int, *, start: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """`n` events in the behavior.toml schema, timestamps inside the retention window."""
    rng = np.random.default_rng(seed)
    t0 = (now_ms() - 10 * n - 1000) if start is None else start
    return {
        "ts": t0 + np.arange(n, dtype=np.int64) * 10,
        "item_id": rng.integers(0, 2**62, n, dtype=np.int64),
        "action": ACTIONS[rng.integers(0, ACTIONS.size, n)],
        "category": rng.integers(0, 2**16, n).astype(np.uint16),
        "dwell_ms": rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32),
        "scenario": SCENARIOS[rng.integers(0, SCENARIOS.size, n)],
    }


def make_store(path: Path, users: dict[Any, int], *, flush: bool = True,
               schema: Schema | None = None) -> Path:
    """A store with `users[u]` events for each user; sealed segments when `flush`."""
    with SeqVault.open(path, schema=schema or Schema.load(SCHEMA)) as v:
        for i, (u, n) in enumerate(users.items()):
            v.append(u, events(n, seed=i))
        if flush:
            v.flush()
    return path


def string_schema() -> Schema:
    """behavior.toml with a string user column."""
    d = Schema.load(SCHEMA).to_dict()
    d["user"]["type"] = "string"
    return Schema.from_dict(d)
