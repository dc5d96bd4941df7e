"""A realistic synthetic behaviour log, written to Parquet in stream (time) order.

Shapes, matching schema/behavior.toml:

- history lengths are heavy-tailed (Pareto activity per user: most users have a few events,
  a few users have tens of thousands);
- items are Zipf-distributed (a hot head and a long tail), category is a function of the item;
- events come in sessions, with bursts of equal timestamps (a feed page shows several items
  in the same millisecond);
- action and scenario are plain string columns (impression, click, ... / feed, video, ...);
- timestamps lie in the last `days` days before `now` (the schema keeps 730 days).

The log is generated window by window (a slice of time at a time), so memory stays bounded
and rows come out globally in time order, not grouped by user: the order a real log has.

    python -m seqvault.sample out.parquet --events 5000000

Small in-memory helpers for tests and benchmarks use the same vocabulary and column types:
`behavior_schema()` (the bundled schema), `event_columns()` (the non-key columns of n events),
`events()` (with timestamps, optionally user ids) and `events_table()` (the same as Arrow).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

ACTIONS = ["impression", "click", "like", "collect", "share", "comment", "follow"]
ACTION_P = [0.78, 0.13, 0.04, 0.02, 0.01, 0.01, 0.01]
SCENARIOS = ["feed", "video", "search", "profile", "live"]
SCENARIO_P = [0.55, 0.25, 0.12, 0.05, 0.03]
N_CATEGORIES = 997
DAY_MS = 86_400_000


def arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("user_id", pa.int64()), ("ts", pa.int64()), ("item_id", pa.int64()),
        ("action", pa.string()), ("category", pa.uint16()), ("dwell_ms", pa.uint32()),
        ("scenario", pa.string()),
    ])


def behavior_schema(*, retention: bool = True) -> Any:
    """The bundled schema/behavior.toml. `retention=False` drops its retention rules, for
    synthetic data whose timestamps are not near the wall clock (max_age is 730 days)."""
    from .schema import Schema, bundled_schema_path

    schema = Schema.load(bundled_schema_path("behavior"))
    if retention:
        return schema
    d = schema.to_dict()
    d.pop("retention", None)
    return Schema.from_dict(d)


def event_columns(rng: np.random.Generator, n: int, *,
                  n_items: int = 1 << 40) -> dict[str, np.ndarray]:
    """The non-key columns of `n` events of schema/behavior.toml, in its column types:
    item_id (int64), action (str objects), category (uint16, a function of the item),
    dwell_ms (uint32, 0 for impressions), scenario (str objects)."""
    item = rng.integers(1, n_items, size=n, dtype=np.int64)
    action = rng.choice(len(ACTIONS), size=n, p=ACTION_P)
    dwell = np.where(action == 0, 0, rng.integers(0, 600_000, size=n)).astype(np.uint32)
    return {
        "item_id": item,
        "action": np.array(ACTIONS, dtype=object)[action],
        "category": (item % N_CATEGORIES).astype(np.uint16),
        "dwell_ms": dwell,
        "scenario": np.array(SCENARIOS, dtype=object)[
            rng.choice(len(SCENARIOS), size=n, p=SCENARIO_P)],
    }


def events(rng: np.random.Generator, n: int, *, users: Any = None, now_ms: int = 1_790_000_000_000,
           distinct_ts: int = 1_000, step_ms: int = 1_000, sort: bool = False,
           n_items: int = 1 << 40) -> dict[str, np.ndarray]:
    """`n` events of schema/behavior.toml as columns: ts takes `distinct_ts` values
    `step_ms` apart ending at `now_ms` (few values: many ties), in random order unless `sort`.
    With `users` (an int: ids 1..users, or an array of ids) a "user_id" column is added, one
    user drawn per row, so rows of different users interleave as in a real log."""
    ts = (now_ms - rng.integers(0, distinct_ts, size=n) * step_ms).astype(np.int64)
    if sort:
        ts = np.sort(ts)
    out: dict[str, np.ndarray] = {}
    if users is not None:
        ids = np.arange(1, users + 1) if isinstance(users, int) else np.asarray(users)
        out["user_id"] = rng.choice(ids, size=n).astype(ids.dtype)
    out["ts"] = ts
    out.update(event_columns(rng, n, n_items=n_items))
    return out


def events_table(rng: np.random.Generator, n: int, *, users: Any = 100, **kw: Any) -> Any:
    """`events(...)` as an Arrow table with a user_id column, in `arrow_schema()`'s types
    (string user ids when `users` holds strings)."""
    import pyarrow as pa

    cols = events(rng, n, users=users, **kw)
    schema = arrow_schema()
    if cols["user_id"].dtype.kind in "OUS":
        schema = schema.set(0, pa.field("user_id", pa.string()))
        cols["user_id"] = cols["user_id"].astype(object)
    return pa.table({k: (v.tolist() if v.dtype == object else v) for k, v in cols.items()},
                    schema=schema)


def user_activity(n_users: int, rng: np.random.Generator, alpha: float = 1.2) -> np.ndarray:
    """Relative activity per user: Pareto(alpha) — heavy-tailed history lengths."""
    w = rng.pareto(alpha, n_users) + 1.0
    return np.minimum(w, np.quantile(w, 0.99999) if n_users > 1000 else w.max())


def generate(
    path: str | Path,
    events: int = 1_000_000,
    *,
    users: int | None = None,
    seed: int = 7,
    now_ms: int | None = None,
    days: int = 300,
    row_group_rows: int = 500_000,
    chunk_events: int = 2_000_000,
    n_items: int = 5_000_000,
    progress: Any = None,
) -> dict[str, Any]:
    """Write about `events` events to `path` (Parquet) and return a short description."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    n_users = int(users or max(10, events // 60))
    start_ms = now_ms - days * DAY_MS
    user_ids = rng.choice(np.int64(1) << 40, size=n_users, replace=False).astype(np.int64) + 1
    weight = user_activity(n_users, rng)
    weight = weight / weight.sum() * events
    windows = max(1, -(-events // chunk_events))
    span = (now_ms - start_ms) // windows
    schema = arrow_schema()
    act_dict = pa.array(ACTIONS)
    scen_dict = pa.array(SCENARIOS)
    written = 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for w in range(windows):
            lo_ms = start_ms + w * span
            counts = rng.poisson(weight / windows)
            n = int(counts.sum())
            if n == 0:
                continue
            uidx = np.repeat(np.arange(n_users), counts)
            # Sessions: each user-window starts somewhere in the window; gaps between events
            # are 0 (a burst: same millisecond) with probability 0.35, else ~20 s on average.
            base = lo_ms + rng.integers(0, max(1, span // 2), size=n_users)
            gaps = np.where(rng.random(n) < 0.35, 0,
                            rng.exponential(20_000, n).astype(np.int64) + 1)
            csum = np.cumsum(gaps)
            first = np.concatenate(([0], np.cumsum(counts)[:-1]))
            start_of = np.repeat(csum[first[counts > 0]] - gaps[first[counts > 0]],
                                 counts[counts > 0])
            ts = np.minimum(base[uidx] + (csum - start_of), now_ms - 1).astype(np.int64)
            order = np.argsort(ts, kind="stable")  # stream order: by time, users interleaved
            uidx, ts = uidx[order], ts[order]
            rank = rng.zipf(1.25, n)
            item = ((rank.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(n_items)
                    ).astype(np.int64) + 1
            action = rng.choice(len(ACTIONS), size=n, p=ACTION_P).astype(np.int32)
            dwell = np.where(action == 0, 0,
                             np.minimum(rng.lognormal(8.5, 1.2, n), 3_600_000)).astype(np.uint32)
            scenario = rng.choice(len(SCENARIOS), size=n, p=SCENARIO_P).astype(np.int32)
            table = pa.table({
                "user_id": user_ids[uidx],
                "ts": ts,
                "item_id": item,
                "action": pa.DictionaryArray.from_arrays(action, act_dict).cast(pa.string()),
                "category": (item % N_CATEGORIES).astype(np.uint16),
                "dwell_ms": dwell,
                "scenario": pa.DictionaryArray.from_arrays(scenario, scen_dict
                                                           ).cast(pa.string()),
            }, schema=schema)
            writer.write_table(table, row_group_size=row_group_rows)
            written += n
            if progress is not None:
                progress(written, events)
    return {"path": str(path), "events": written, "users": n_users,
            "bytes": path.stat().st_size, "from_ms": start_ms, "to_ms": now_ms}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=None)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    info = generate(args.path, args.events, users=args.users, seed=args.seed)
    print(info)


if __name__ == "__main__":
    main()
