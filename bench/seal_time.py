"""Wall time of the partial seals inside an append stream: how long the caller waits for each
one (docs/design/realtime.md, "The seal's log sync overlapped").

    python -m bench.seal_time --events 250000 --batch 20 --repeat 3

Appends the bench's event stream (bench/appends.py's Zipf users) in calls of ``--batch`` into a
fresh store at ``--durability``, timing every ``SeqVault._seal_users`` call, and prints events/s
of the whole stream, the number of seals and the mean milliseconds a seal. A stream longer than
``memtable_events`` (262,144) also holds a full flush, which is not counted as a seal.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from typing import Any

from bench import workload as wl
from bench.scenarios import open_store
from seqvault import vault as vault_mod


def run_once(events: int, batch: int, durability: str, data_dir: str | None) -> dict[str, Any]:
    spent = [0.0, 0]
    original = vault_mod.SeqVault._seal_users

    def timed(self: vault_mod.SeqVault, keys: list[Any]) -> None:
        t0 = time.perf_counter()
        try:
            original(self, keys)
        finally:
            spent[0] += time.perf_counter() - t0
            spent[1] += 1

    w = wl.WorkloadConfig()
    population, _ = wl.population_users(w)
    stream = wl.event_stream(w, population, events, salt=batch)
    calls = [wl.slice_columns(stream, i, i + batch) for i in range(0, events - batch + 1, batch)]
    scratch = tempfile.mkdtemp(dir=data_dir)
    vault_mod.SeqVault._seal_users = timed  # type: ignore[method-assign]
    try:
        store = open_store("seqvault", scratch + "/store", durability, w.blob_cap)
        t0 = time.perf_counter()
        for c in calls:
            store.append_events(c)
        wall = time.perf_counter() - t0
        store.close()
    finally:
        vault_mod.SeqVault._seal_users = original  # type: ignore[method-assign]
        shutil.rmtree(scratch, ignore_errors=True)
    n = len(calls) * batch
    return {"events": n, "events_per_s": n / wall, "seals": spent[1],
            "ms_per_seal": spent[0] / max(spent[1], 1) * 1e3, "seal_s": spent[0], "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.seal_time", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=250_000)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--durability", default="batch", choices=("sync", "batch", "none"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    for _ in range(args.repeat):
        r = run_once(args.events, args.batch, args.durability, args.data_dir)
        print(f"{r['events_per_s']:,.0f} events/s, {r['seals']} seals, "
              f"{r['ms_per_seal']:.2f} ms a seal ({r['seal_s']:.3f} s of {r['wall_s']:.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
