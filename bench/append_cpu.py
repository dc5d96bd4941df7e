"""Thread CPU per append call, SeqVault against RocksDB key-per-event, back to back in one
process (the figures of docs/design/realtime.md, "Append kernel"): steadier than events/s by
wall clock on a shared machine, since other processes' load falls outside thread CPU.

    python -m bench.append_cpu --durability batch --batches 1,20,100 --repeat 5
    python -m bench.append_cpu --durability batch --batches 1 --profile   # cProfile of SeqVault

Each repeat appends the bench's event stream (bench/appends.py's) into fresh stores: 50 warm-up
calls, then the measured ones; prints µs per call of each system and RocksDB ÷ SeqVault.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

from bench import workload as wl
from bench.scenarios import open_store


def cpu_per_call(system: str, durability: str, batch: int, calls: int, data_dir: str | None,
                 profile: bool = False) -> float:
    w = wl.WorkloadConfig()
    population, _ = wl.population_users(w)
    n_events = min(200_000, batch * 20_000)
    calls = min(calls, n_events // batch - 50)
    stream = wl.event_stream(w, population, n_events, salt=batch)
    path = tempfile.mkdtemp(prefix=f"append-cpu-{system}-", dir=data_dir) + "/store"
    store = open_store(system, path, durability, w.blob_cap)
    slices = [wl.slice_columns(stream, i, i + batch) for i in range(0, batch * (calls + 50), batch)]
    try:
        for s in slices[:50]:
            store.append_events(s)
        prof = cProfile.Profile() if profile else None
        t0 = time.thread_time()
        if prof is not None:
            prof.enable()
        for s in slices[50:]:
            store.append_events(s)
        if prof is not None:
            prof.disable()
        spent = time.thread_time() - t0
    finally:
        store.close()
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    return spent / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.append_cpu",
                                description=__doc__.split("\n")[0])
    p.add_argument("--durability", default="batch")
    p.add_argument("--batches", default="1,20,100")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args(argv)
    for b in (int(x) for x in a.batches.split(",")):
        if a.profile:
            cpu_per_call("seqvault", a.durability, b, 3000, a.data_dir, profile=True)
            continue
        calls = max(200, 6000 // b)
        runs = [(cpu_per_call("seqvault", a.durability, b, calls, a.data_dir),
                 cpu_per_call("rocks_event", a.durability, b, calls, a.data_dir))
                for _ in range(a.repeat)]
        print(f"{a.durability} calls of {b}: SeqVault µs/call {[round(s, 1) for s, _ in runs]}, "
              f"RocksDB {[round(r, 1) for _, r in runs]}, RocksDB ÷ SeqVault "
              f"{[round(r / s, 2) for s, r in runs]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
