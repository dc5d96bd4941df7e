"""laser_reader throughput against plain `read_many` (issue 7).

    .venv/bin/python -m bench.laser_reader_bench [--users 1024] [--events 1000] [--repeat 7]
                                                 [--json out.json]

Builds a store of `users` × `events` events (behaviour-log columns: item_id int64, action
string, category uint16, dwell_ms uint32), sealed in segments, then times one batch of all users:

- read_many[num] / read_batch[num]   numeric columns only, no time features: the cost of
                   concatenating and padding alone
- read_many        vault.read_many(users, last=max_len, columns=...)  (the floor)
- read_jagged      LaserReader.read_jagged (read incl. ts + concatenate + string map ("store"
                   codes) + time features)
- read_batch       LaserReader.read_batch (numpy, left padded [B, T])
- read_batch+torch read_batch(...).to_torch()
- read_batch@before  the same with one point-in-time `before` per user (training reads)

Reports wall median / min / p90 and process-CPU median per batch, users/s and events/s, and the
ratio of each to read_many (wall and CPU). Cases run interleaved. Timings belong here, never in
tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from seqvault import Schema, SeqVault
from seqvault.laser_reader import LaserReader

ACTIONS = np.array(["impression", "click", "like", "collect", "share", "comment", "follow"],
                   dtype=object)


def schema() -> Schema:
    return Schema.from_dict({
        "user": {"column": "user_id", "type": "int64"},
        "time": {"column": "ts", "unit": "ms"},
        "columns": [
            {"name": "item_id", "type": "int64", "default": 0},
            {"name": "action", "type": "string", "default": "impression"},
            {"name": "category", "type": "uint16", "default": 0},
            {"name": "dwell_ms", "type": "uint32", "default": 0},
        ],
    })


def build(path: Path, users: int, events: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with SeqVault.open(path, schema=schema()) as v:
        for u in range(users):
            ts = 1_700_000_000_000 + np.sort(rng.integers(0, 86_400_000 * 30, size=events))
            v.append(u, {"ts": ts, "item_id": rng.integers(1, 10_000_000, size=events),
                         "action": ACTIONS[rng.integers(0, len(ACTIONS), size=events)],
                         "category": rng.integers(0, 500, size=events).astype(np.uint16),
                         "dwell_ms": rng.integers(0, 60_000, size=events).astype(np.uint32)})
        v.flush()


def timed(cases: dict[str, Any], repeat: int) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and process-CPU seconds per call, cases interleaved round by round so that load from
    other processes spreads over all of them alike (CPU time is the steadier figure on a busy
    machine)."""
    for fn in cases.values():
        fn()  # warm-up (page cache, dictionaries)
    out: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            t1, c1 = time.perf_counter(), time.process_time()
            out[name][0].append(t1 - t0)
            out[name][1].append(c1 - c0)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1024)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--max-len", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        t0 = time.perf_counter()
        build(path, args.users, args.events)
        build_s = time.perf_counter() - t0
        users = list(range(args.users))
        cols = ["item_id", "action", "category", "dwell_ms"]
        with SeqVault.open(path, read_only=True) as v:
            reader = LaserReader(v, cols, max_len=args.max_len, string_maps={"action": "store"})
            before = np.full(args.users, 1_700_000_000_000 + 86_400_000 * 15, dtype=np.int64)
            n_events = sum(len(s) for s in v.read_many(users, last=args.max_len, columns=cols))
            n_before = int(reader.read_batch(users, before=before).lengths.sum())
            num = ["item_id", "category", "dwell_ms"]
            plain = LaserReader(v, num, max_len=args.max_len, time_features=False)
            cases = {
                "read_many[num]": lambda: v.read_many(users, last=args.max_len, columns=num),
                "read_batch[num]": lambda: plain.read_batch(users),
                "read_many": lambda: v.read_many(users, last=args.max_len, columns=cols),
                "read_many+ts": lambda: v.read_many(users, last=args.max_len,
                                                    columns=[*cols, "ts"]),
                "read_jagged": lambda: reader.read_jagged(users),
                "read_batch": lambda: reader.read_batch(users),
                "read_batch+torch": lambda: reader.read_batch(users).to_torch(),
                "read_many@before": lambda: v.read_many(users, last=args.max_len, columns=cols,
                                                        before=before.tolist()),
                "read_batch@before": lambda: reader.read_batch(users, before=before),
            }
            results: dict[str, Any] = {}
            for name, (wall, cpu) in timed(cases, args.repeat).items():
                med, cpu_med = float(np.median(wall)), float(np.median(cpu))
                ev = n_before if "@before" in name else n_events
                results[name] = {"median_s": med, "min_s": float(min(wall)),
                                 "p90_s": float(np.percentile(wall, 90)), "cpu_median_s": cpu_med,
                                 "users_per_s": args.users / med, "events_per_s": ev / med,
                                 "cpu_users_per_s": args.users / cpu_med,
                                 "cpu_events_per_s": ev / cpu_med, "events": ev}
    base = results["read_many"]
    base_b = results["read_many@before"]
    for name, r in results.items():
        ref = (base_b if "@before" in name else
               results["read_many[num]"] if name.endswith("[num]") else base)
        r["vs_read_many"] = r["median_s"] / ref["median_s"]
        r["cpu_vs_read_many"] = r["cpu_median_s"] / ref["cpu_median_s"]
    report = {"users": args.users, "events_per_user": args.events, "max_len": args.max_len,
              "repeat": args.repeat, "build_s": build_s, "python": sys.version.split()[0],
              "machine": platform.machine(), "cpus": os.cpu_count(), "numpy": np.__version__,
              "loadavg_after": os.getloadavg(), "results": results}
    print(f"{args.users} users x {args.events} events, max_len {args.max_len}, "
          f"median of {args.repeat} (store built in {build_s:.1f} s, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'case':<19}{'wall ms':>9}{'min ms':>8}{'cpu ms':>8}{'users/s':>9}{'Mev/s':>7}"
          f"{'cpu users/s':>12}{'x read_many':>12}{'cpu x':>7}")
    for name, r in results.items():
        print(f"{name:<19}{r['median_s'] * 1e3:>9.1f}{r['min_s'] * 1e3:>8.1f}"
              f"{r['cpu_median_s'] * 1e3:>8.1f}{r['users_per_s']:>9.0f}"
              f"{r['events_per_s'] / 1e6:>7.2f}{r['cpu_users_per_s']:>12.0f}"
              f"{r['vs_read_many']:>12.2f}{r['cpu_vs_read_many']:>7.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
