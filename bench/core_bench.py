"""Core-engine figures: DRAM index bytes per user and open time at 1M users, read latency for
last 100 / 1,000 / 10,000, append throughput at each durability.

    python -m bench.core_bench [--users 1000000] [--out bench/results/core]

Writes `core.json` and `core.md` under --out. Timings are wall-clock percentiles on this
machine; the RocksDB comparisons live in `python -m bench.run` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from seqvault import SeqVault, sample

from .measure import machine_info, percentiles_ms

# schema/behavior.toml without its retention rules (the benchmark's timestamps are fixed, not
# relative to the wall clock, and reads must not pay for a retention filter).
SCHEMA = sample.behavior_schema(retention=False)
# The benchmark's own event distribution, kept as it is so that figures stay comparable from run
# to run (seqvault.sample.event_columns draws the same columns with other parameters).
ACTIONS = np.array(["impression", "click", "like", "collect", "share"], dtype=object)
SCENES = np.array(["feed", "video", "search"], dtype=object)
T0 = 1_760_000_000_000


def events(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    ts = np.sort(T0 + rng.integers(0, 86_400_000 * 200, n))
    cols = {
        "item_id": (rng.zipf(1.3, n) % 50_000_000).astype(np.int64),
        "action": ACTIONS[rng.choice(5, n, p=[0.8, 0.12, 0.05, 0.02, 0.01])],
        "category": rng.integers(0, 400, n).astype(np.uint16),
        "dwell_ms": (rng.exponential(4000, n) * (rng.random(n) < 0.3)).astype(np.uint32),
        "scenario": SCENES[rng.choice(3, n, p=[0.6, 0.3, 0.1])],
    }
    return ts, cols


def dict_of_tuples_bytes_per_user(n: int = 100_000) -> float:
    """What a plain dict {user: [(file, off, len, count, min, max)]} costs per user."""
    gc.collect()
    tracemalloc.start()
    d = {u * 7919: [(1, u * 100, 400, 10, T0 + u, T0 + u + 5)] for u in range(n)}
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del d
    return size / n


def bench_index(root: Path, users: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    path = root / "index-store"
    t0 = time.perf_counter()
    with SeqVault.open(path, schema=SCHEMA, durability="none") as v:
        chunk = 100_000
        for start in range(0, users, chunk):
            with v.bulk_writer(merge_existing=False) as bw:
                for u in range(start, min(start + chunk, users)):
                    ts, cols = events(rng, 3)
                    bw.add(u, ts, cols)
    build_s = time.perf_counter() - t0
    with SeqVault.open(path, read_only=True) as r:  # steady state: arrays sized from the checkpoint
        st = r.stats()
    opens = []
    for read_only in (False, True, False, True, False, True):
        t = time.perf_counter()
        v = SeqVault.open(path, read_only=read_only)
        opens.append((read_only, time.perf_counter() - t))
        assert v.read(users - 1).count == 3
        v.close(flush=False) if not read_only else v.close()
    return {
        "users": users,
        "build_seconds": round(build_s, 1),
        "index_bytes": st["index_bytes"],
        "index_bytes_per_user": round(st["index_bytes"] / users, 1),
        "dict_of_tuples_bytes_per_user": round(dict_of_tuples_bytes_per_user(), 1),
        "open_seconds_writer_median": round(float(np.median([t for r, t in opens if not r])), 3),
        "open_seconds_reader_median": round(float(np.median([t for r, t in opens if r])), 3),
    }


def bench_reads(root: Path, users: int = 200, per_user: int = 10_000, reads: int = 2000
                ) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    path = root / "read-store"
    with SeqVault.open(path, schema=SCHEMA, durability="none") as v:
        with v.bulk_writer() as bw:
            for u in range(users):
                ts, cols = events(rng, per_user)
                bw.add(u, ts, cols)
        disk = v.stats()["data_bytes"]
    out: dict[str, Any] = {"users": users, "events_per_user": per_user,
                           "data_bytes_per_event": round(disk / (users * per_user), 2)}
    with SeqVault.open(path, read_only=True) as r:
        for last in (100, 1_000, 10_000):
            order = rng.integers(0, users, reads)
            for u in order[:50]:
                r.read(int(u), last=last)  # warm the page cache and the code paths
            lat = np.empty(reads, dtype=np.int64)
            cpu0 = time.process_time()
            for i, u in enumerate(order):
                t = time.perf_counter_ns()
                seq = r.read(int(u), last=last)
                lat[i] = time.perf_counter_ns() - t
                assert seq.count == last
            cpu = (time.process_time() - cpu0) / reads
            out[f"last_{last}"] = {**{k: round(v, 4) for k, v in percentiles_ms(lat).items()},
                                   "cpu_ms_per_read": round(cpu * 1e3, 4)}
    return out


def bench_appends(root: Path, batches: int = 3000, batch: int = 20) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    out: dict[str, Any] = {"events_per_append": batch}
    prepared = [events(rng, batch) for _ in range(64)]
    for durability in ("none", "batch", "sync"):
        path = root / f"append-{durability}"
        n = batches if durability != "sync" else max(batches // 3, 200)
        with SeqVault.open(path, schema=SCHEMA, durability=durability) as v:
            lat = np.empty(n, dtype=np.int64)
            t0 = time.perf_counter()
            for i in range(n):
                ts, cols = prepared[i % 64]
                t = time.perf_counter_ns()
                v.append(i % 5000, {"ts": ts, **cols})
                lat[i] = time.perf_counter_ns() - t
            elapsed = time.perf_counter() - t0
        out[durability] = {"appends": n, "events_per_second": round(n * batch / elapsed),
                           **{k: round(x, 4) for k, x in percentiles_ms(lat).items()}}
    return out


def to_markdown(res: dict[str, Any]) -> str:
    ix, rd, ap = res["index"], res["reads"], res["appends"]
    lines = [
        "| measure | value |", "|---|---|",
        f"| DRAM index, {ix['users']:,} users | {ix['index_bytes_per_user']} B/user "
        f"(dict of tuples: {ix['dict_of_tuples_bytes_per_user']} B/user) |",
        f"| open, writer (median of 3) | {ix['open_seconds_writer_median']} s |",
        f"| open, read-only (median of 3) | {ix['open_seconds_reader_median']} s |",
        f"| disk, {rd['events_per_user']:,} events/user | {rd['data_bytes_per_event']} B/event |",
    ]
    for last in (100, 1_000, 10_000):
        r = rd[f"last_{last}"]
        lines.append(f"| read last {last:,} | p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, "
                     f"max {r['max_ms']:.2f} ms, CPU {r['cpu_ms_per_read']:.3f} ms/read |")
    for d in ("none", "batch", "sync"):
        a = ap[d]
        lines.append(f"| append ({ap['events_per_append']} events/call), durability={d} | "
                     f"{a['events_per_second']:,} events/s, p50 {a['p50_ms']:.3f} ms, "
                     f"p99 {a['p99_ms']:.3f} ms |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=Path("bench/results/core"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--only", choices=["index", "reads", "appends"], action="append",
                    help="run only these parts (repeatable)")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sv-core-"))
    try:
        users = 2_000 if args.quick else args.users
        only = set(args.only or ["index", "reads", "appends"])
        old = json.loads((args.out / "core.json").read_text()) if (args.out / "core.json").exists() \
            else {}
        res = {
            "machine": machine_info(),
            "command": "python -m bench.core_bench " + " ".join(argv or sys.argv[1:]),
            "index": bench_index(root, users) if "index" in only else old.get("index"),
            "reads": bench_reads(root, *((20, 10_000, 100) if args.quick else ()))
            if "reads" in only else old.get("reads"),
            "appends": bench_appends(root, *((100,) if args.quick else ()))
            if "appends" in only else old.get("appends"),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "core.json").write_text(json.dumps(res, indent=2))
    (args.out / "core.md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
