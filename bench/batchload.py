"""The many-user ``append_batch`` load on its own: SeqVault against RocksDB write batches.

    python -m bench.batchload --users 1000000 --per-user 3 --call-rows 100000 --repeat 3

Each (system, repeat) runs in a fresh child process (its own CPU clock and memory), systems
alternating so machine noise falls on both; prints one JSON line per run and a summary with
the median and the spread of events per CPU-second and end-to-end events/s, and the ratio
SeqVault ÷ RocksDB (the issue's target: ≥ 1× in events per CPU-second).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

SYSTEMS = ("seqvault", "rocks_event")


def _child(system: str, users: int, per_user: int, call_rows: int, data_dir: str) -> None:
    from bench.scenarios import batch_load
    from bench.workload import WorkloadConfig

    path = tempfile.mkdtemp(prefix=f"batchload-{system}-", dir=data_dir) + "/store"
    out = batch_load(system, WorkloadConfig(), users, per_user, call_rows, path)
    print(json.dumps({"system": system, **out}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batchload", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--per-user", type=int, default=3)
    p.add_argument("--call-rows", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", help="write every run and the summary to this JSON file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        _child(a.child, a.users, a.per_user, a.call_rows, a.data_dir)
        return 0
    systems = [s for s in a.systems.split(",") if s]
    runs: list[dict] = []
    for r in range(a.repeat):
        order = systems[r % len(systems):] + systems[: r % len(systems)]
        for system in order:
            cmd = [sys.executable, "-m", "bench.batchload", "--child", system,
                   "--users", str(a.users), "--per-user", str(a.per_user),
                   "--call-rows", str(a.call_rows)]
            if a.data_dir:
                cmd += ["--data-dir", a.data_dir]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            run = json.loads(line.strip().splitlines()[-1])
            runs.append(run)
            print(json.dumps({k: run[k] for k in (
                "system", "events", "write_cpu_seconds", "flush_cpu_seconds",
                "merge_cpu_seconds", "cpu_seconds", "seconds", "events_per_cpu_second",
                "events_per_s", "mismatches")}), flush=True)
    summary: dict = {}
    for system in systems:
        mine = [x for x in runs if x["system"] == system]
        for key in ("events_per_cpu_second", "events_per_s"):
            vals = sorted(x[key] for x in mine)
            summary.setdefault(system, {})[key] = {
                "median": statistics.median(vals), "min": vals[0], "max": vals[-1]}
    if "seqvault" in summary and "rocks_event" in summary:
        summary["ratio_seqvault_over_rocks_event"] = {
            key: summary["seqvault"][key]["median"] / summary["rocks_event"][key]["median"]
            for key in ("events_per_cpu_second", "events_per_s")}
    print(json.dumps(summary, indent=1))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"argv": argv or sys.argv[1:], "runs": runs, "summary": summary}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
