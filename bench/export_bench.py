"""Export vs ingest throughput on the same data, measured side by side in one run.

One synthetic behaviour log (seqvault.sample) is ingested into a fresh store with
`seqvault ingest`, then exported back to Parquet with `seqvault export`, with one reader process
and with the default (one per core, up to 8). Each command runs as a real subprocess and is
timed by wall clock and by CPU (children's user + system time), because this machine may be
shared: CPU seconds per million events compare the code, wall seconds what a user waits.

    python -m bench.export_bench --events 3000000

Writes bench/results/export-<events>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "SEQVAULT_NO_PROGRESS": "1"},
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3_000_000)
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default: tmp)")
    args = ap.parse_args(argv)
    from seqvault.sample import generate

    work = Path(args.work or tempfile.mkdtemp(prefix="export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"events-{args.events}.parquet"
    if not log.exists():
        generate(log, args.events)
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    sv = [sys.executable, "-m", "seqvault"]
    schema = str(ROOT / "schema" / "behavior.toml")
    result: dict[str, Any] = {"events": args.events, "cores": os.cpu_count(),
                              "load_avg_before": os.getloadavg()[0]}
    result["ingest"] = timed([*sv, "ingest", str(log), "--store", str(store), "--schema", schema])
    for name, extra in (("export_1_process", ["--jobs", "1"]), ("export_default", [])):
        out = work / f"{name}.parquet"
        result[name] = timed([*sv, "export", str(out), "--store", str(store), *extra])
        out.unlink()
    result["load_avg_after"] = os.getloadavg()[0]
    per_m = 1e6 / args.events
    print(f"{args.events:,} events, {os.cpu_count()} cores, load average "
          f"{result['load_avg_before']:.1f} -> {result['load_avg_after']:.1f}")
    print(f"{'command':<18} {'wall s':>8} {'cpu s':>8} {'events/s (wall)':>16} "
          f"{'cpu s per 1M':>13} {'wall vs ingest':>15}")
    for name in ("ingest", "export_1_process", "export_default"):
        r = result[name]
        print(f"{name:<18} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} "
              f"{args.events / r['wall_s']:>16,.0f} {r['cpu_s'] * per_m:>13.2f} "
              f"{r['wall_s'] / result['ingest']['wall_s']:>14.2f}x")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"export-{args.events}.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
