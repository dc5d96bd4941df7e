"""A second, read-only SeqVault process for the "reads during a merge" workload.

``python -m bench.ro_reader STORE USERS_NPY LAST RATE OUT_NPZ``: opens the store with
``read_only=True`` (public API), prints ``ready``, then reads the last ``LAST`` events of the
users in ``USERS_NPY`` (cycling) at ``RATE`` reads/s until a line arrives on stdin; writes each
read's start (``perf_counter_ns``: CLOCK_MONOTONIC, comparable across processes on Linux) and
latency to ``OUT_NPZ`` and prints ``ok``. The parent splits the reads into those that started
while its merge ran and the quiet ones before and after.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback

import numpy as np


def main(argv: list[str]) -> int:
    path, users_npy, last, rate, out = argv[0], argv[1], int(argv[2]), float(argv[3]), argv[4]
    from seqvault import SeqVault

    users = np.load(users_npy).tolist()
    vault = SeqVault.open(path, read_only=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    starts: list[int] = []
    lat: list[int] = []
    errors: list[str] = []
    perf = time.perf_counter_ns
    period = int(1e9 / rate)
    next_t = perf()
    i = 0
    while not stop.is_set():
        now = perf()
        if now < next_t:
            time.sleep((next_t - now) / 1e9)
        next_t = max(next_t + period, now - 10 * period)  # behind: don't burst to catch up
        t0 = perf()
        try:
            vault.read(users[i % len(users)], last=last)
        except Exception:  # reported by the parent, never fatal to the benchmark
            if len(errors) < 5:
                errors.append(traceback.format_exc(limit=3))
        lat.append(perf() - t0)
        starts.append(t0)
        i += 1
    vault.close()
    np.savez(out, starts=np.asarray(starts, dtype=np.int64), lat=np.asarray(lat, dtype=np.int64),
             errors=np.asarray(errors, dtype=object))
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
