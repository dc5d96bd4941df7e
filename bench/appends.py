"""The append rows on their own: calls of 1 / 20 / 100 events at ``batch`` and ``sync``,
SeqVault against RocksDB key-per-event, into fresh stores.

    python -m bench.appends --repeat 3 --seconds 3

Each (system, durability, batch, repeat) runs in a fresh child process, systems alternating so
machine noise falls on both. Prints one JSON line per run (ops/s and events/s by wall clock,
per-call thread CPU p50 and mean) and a summary: medians, min..max over the repeats, and the
ratio SeqVault ÷ RocksDB of events/s (the issue's target: ≥ 2× at every point). Unlike
``make bench``, the stores start empty (no loaded history), so seals and flushes of the
appended events are all the background work there is. With ``sync`` it also measures the disk's
floor (``sync_floor``: pwrite + fdatasync of one record, per second) and reports, per sync
point, the events/s one caller could reach if a call cost nothing but that round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

SYSTEMS = ("seqvault", "rocks_event")


def _child(system: str, durability: str, batch: int, seconds: float, data_dir: str | None
           ) -> None:
    from bench import measure
    from bench import workload as wl
    from bench.scenarios import open_store

    w = wl.WorkloadConfig()
    population, _ = wl.population_users(w)
    n_events = min(200_000, batch * 20_000)
    stream = wl.event_stream(w, population, n_events, salt=batch)
    path = tempfile.mkdtemp(prefix=f"appends-{system}-", dir=data_dir) + "/store"
    store = open_store(system, path, durability, w.blob_cap)
    try:
        slices = (wl.slice_columns(stream, i, i + batch)
                  for i in range(0, n_events - batch + 1, batch))
        r = measure.run_ops(store.append_events, slices, max_seconds=seconds, warmup=20,
                            units=lambda a, _r: len(a["ts"]))
    finally:
        store.close()
    print(json.dumps({"system": system, "durability": durability, "batch": batch,
                      "events_per_s": r["units_per_s"], "ops_per_s": r["ops_per_s"],
                      "tcpu_p50_us": r["tcpu_p50_ms"] * 1e3,
                      "tcpu_mean_us": r["tcpu_mean_ms"] * 1e3,
                      "cpu_us_per_event": r["cpu_us_per_unit"]}))


def sync_floor(data_dir: str | None, seconds: float = 1.0, record: int = 128) -> float:
    """Durable one-record appends per second this disk allows a single caller: pwrite of one
    record then fdatasync, into a preallocated, zero-filled, fsynced file (what SeqVault's log
    does in `sync`; RocksDB's WAL does the same per synced write). A `sync` call of any size
    needs at least one such round, so ``floor × batch`` bounds the events/s of both systems."""
    import os
    import time

    path = tempfile.mkdtemp(prefix="appends-floor-", dir=data_dir) + "/floor"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        size = 64 << 20
        os.pwrite(fd, bytes(size), 0)
        os.fsync(fd)
        rec, pos, n = os.urandom(record), 0, 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds and pos + record <= size:
            os.pwrite(fd, rec, pos)
            os.fdatasync(fd)
            pos += record
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.appends", description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--batches", default="1,20,100")
    p.add_argument("--durabilities", default="batch,sync")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", help="write every run and the summary to this JSON file")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        _child(a.child[0], a.child[1], int(a.child[2]), a.seconds, a.data_dir)
        return 0
    systems = [s for s in a.systems.split(",") if s]
    runs: list[dict] = []
    points = [(d, int(b)) for d in a.durabilities.split(",") for b in a.batches.split(",")]
    for r in range(a.repeat):
        for d, b in points:
            order = systems[r % len(systems):] + systems[: r % len(systems)]
            for system in order:
                cmd = [sys.executable, "-m", "bench.appends", "--child", system, d, str(b),
                       "--seconds", str(a.seconds)]
                if a.data_dir:
                    cmd += ["--data-dir", a.data_dir]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                runs.append(json.loads(out.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]), flush=True)
    floors: list[float] = []
    if "sync" in a.durabilities.split(","):
        floors = sorted(sync_floor(a.data_dir) for _ in range(a.repeat))
        print(json.dumps({"sync_floor_ops_per_s": floors}), flush=True)
    summary = []
    for d, b in points:
        row: dict = {"durability": d, "batch": b}
        for system in systems:
            mine = [x for x in runs if (x["system"], x["durability"], x["batch"]) == (system, d, b)]
            eps = sorted(x["events_per_s"] for x in mine)
            p50 = sorted(x["tcpu_p50_us"] for x in mine)
            row[system] = {"events_per_s": statistics.median(eps), "min": eps[0], "max": eps[-1],
                           "tcpu_p50_us": statistics.median(p50)}
        if "seqvault" in row and "rocks_event" in row:
            row["ratio"] = row["seqvault"]["events_per_s"] / row["rocks_event"]["events_per_s"]
        if d == "sync" and floors:
            # One fdatasync per call at best: the disk's bound on any system's events/s here.
            row["floor_events_per_s"] = statistics.median(floors) * b
        summary.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"argv": argv or sys.argv[1:], "runs": runs, "summary": summary,
                       "sync_floor_ops_per_s": floors}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
