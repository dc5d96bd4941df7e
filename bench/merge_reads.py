"""Read p99 during a merge, SeqVault alone, without the whole ``make bench`` (issue 12: "read
p99 during a merge ≤ 2× the quiet p99").

    .venv/bin/python -m bench.merge_reads                        # background merger, process
    .venv/bin/python -m bench.merge_reads --mode explicit --worker thread   # merge() in-process

Runs the benchmark's own steps (``bench/scenarios.py``) for SeqVault only: ``load`` (the
preset's population), one append workload (``--appends``, default ``batch:20``: fresh
real-time segments for the merge to fold), then ``merge``: Zipf reads of the last 1,000 at
500 reads/s in this process while the merge runs, then the same reads on the quiet store, and
the same from a second, read-only process. ``--mode background`` (default) is the writer as a
server runs it (``auto_merge=True``: the background merger, heavy part in the merge process
with ``--worker process``); ``--mode explicit`` calls ``merge()`` in a thread of this process.
On code from before the merge process (no ``merge_mode`` in the adapter), the phase runs as
it did then: an explicit ``merge()`` in a thread, at ``merge_nice``.

Prints the phase's JSON (``during_*`` and ``quiet_*`` latencies in ms, and their ratio), plus
``slow_reads``: the in-process reads during the merge slower than twice the quiet p99, and how
many of them overlapped an LMDB commit (``Manifest.commit``, which runs under the store lock
that a read takes to snapshot) — where the rest of a same-process read's wait comes from.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.scenarios import PRESETS, Runner


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--appends", default="batch:20",
                    help="the append workload before the merge (durability:batch size)")
    ap.add_argument("--mode", default="background", choices=("background", "explicit"))
    ap.add_argument("--worker", default="process", choices=("process", "thread"))
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="sv-merge-reads-"))
    path = tmp / "seqvault"
    shutil.rmtree(path, ignore_errors=True)
    runner = Runner("seqvault", PRESETS[args.preset], str(path))
    try:
        runner.do("load")
        runner.do(f"appends:{args.appends}")
        store = runner.store
        if hasattr(store, "merge_mode"):
            store.merge_mode = args.mode
            store.merge_worker = args.worker
            label = f"{args.mode} ({args.worker})"
        else:
            label = "explicit merge() in a thread (code before the merge process)"
        load = os.getloadavg()[0]
        reads: list[tuple[int, int]] = []
        commits: list[tuple[int, int]] = []
        _trace(store, reads, commits)
        runner.do("merge")
        out = dict(runner.out["merge"])
        out["how"] = label
        out["load_avg_1m_before"] = round(load, 2)
        out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
        if out.get("quiet_p99_ms"):
            out["p99_during_over_quiet"] = round(out["during_p99_ms"] / out["quiet_p99_ms"], 3)
        out["slow_reads"] = _slow_reads(reads, commits, 2 * out.get("quiet_p99_ms", 0.0),
                                        out.get("during_ops", 0))
        ro = out.get("read_only_process") or {}
        if ro.get("quiet_p99_ms"):
            ro["p99_during_over_quiet"] = round(ro["during_p99_ms"] / ro["quiet_p99_ms"], 3)
        runner.store.close()
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1, default=float))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    return out


def _trace(store: Any, reads: list[tuple[int, int]], commits: list[tuple[int, int]]) -> None:
    """Record (start, end) ns of this process's reads and of every LMDB commit."""
    from seqvault import manifest

    read_last = store.read_last

    def traced_read(*a: Any, **k: Any) -> Any:
        t = time.perf_counter_ns()
        try:
            return read_last(*a, **k)
        finally:
            reads.append((t, time.perf_counter_ns()))

    commit = manifest.Manifest.commit

    def traced_commit(self: Any, *a: Any, **k: Any) -> Any:
        t = time.perf_counter_ns()
        try:
            return commit(self, *a, **k)
        finally:
            commits.append((t, time.perf_counter_ns()))

    store.read_last = traced_read
    manifest.Manifest.commit = traced_commit  # type: ignore[method-assign]


def _slow_reads(reads: list[tuple[int, int]], commits: list[tuple[int, int]], limit_ms: float,
                during: int) -> dict[str, Any]:
    window = reads[:during]
    slow = [(a, b) for a, b in window if (b - a) / 1e6 > limit_ms]
    lock = sum(1 for a, b in slow if any(c0 < b and c1 > a for c0, c1 in commits))
    return {"limit_ms": round(limit_ms, 3), "reads_during": len(window), "slow": len(slow),
            "slow_overlapping_an_lmdb_commit": lock, "lmdb_commits": len(commits),
            "lmdb_commit_ms_p50": round(float(np.percentile(
                [(b - a) / 1e6 for a, b in commits], 50)), 3) if commits else None,
            "lmdb_commit_ms_max": round(max((b - a) / 1e6 for a, b in commits), 3)
            if commits else None}


if __name__ == "__main__":
    main()
