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

Prints the phase's JSON (``during_*`` and ``quiet_*`` latencies in ms, and their ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

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
        runner.do("merge")
        out = dict(runner.out["merge"])
        out["how"] = label
        out["load_avg_1m_before"] = round(load, 2)
        out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
        if out.get("quiet_p99_ms"):
            out["p99_during_over_quiet"] = round(out["during_p99_ms"] / out["quiet_p99_ms"], 3)
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


if __name__ == "__main__":
    main()
