"""Thread-CPU of the paths the hash-collision change touches (docs/design/safety.md, section 8):
a read of the last 100, a single-event append, and a full flush per user: the first after a
reopen (every user already has sealed extents, so each one's slot claim reads one segment
header) and a second one (the writer remembers the owners it claimed).

Run: `python bench/micro/slot_cpu.py [runs]`; for the code before a change, put a checkout of
it first on PYTHONPATH (PYTHONDONTWRITEBYTECODE=1 keeps that checkout clean).
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

from seqvault import Schema, SeqVault

SCHEMA = Schema.from_dict({"columns": [{"name": "item", "type": "int64", "default": 0},
                                       {"name": "act", "type": "string", "default": "v"}]})
USERS, PER_USER, CALLS = 2000, 300, 4000


def run(seed: int) -> tuple[float, float, float, float]:
    rng = random.Random(seed)
    d = tempfile.mkdtemp(prefix="sv-slot-cpu-")
    try:
        v = SeqVault.open(d + "/s", schema=SCHEMA, durability="none")
        users = np.repeat(np.arange(USERS), PER_USER)
        v.append_batch({"user_id": users, "ts": np.tile(np.arange(PER_USER), USERS) * 1000,
                        "item": np.arange(users.size),
                        "act": np.array(["c", "v", "l"])[np.arange(users.size) % 3]})
        v.flush()
        v.merge()
        v.close()
        v = SeqVault.open(d + "/s")
        for u in range(USERS):  # a memtable tail for everyone
            v.append(u, {"ts": [PER_USER * 1000 + 1], "item": [1], "act": ["c"]})
        picks = [rng.randrange(USERS) for _ in range(CALLS)]
        for u in picks[:200]:
            v.read(u, last=100)
        t = time.thread_time()
        for u in picks:
            v.read(u, last=100)
        get_us = (time.thread_time() - t) / CALLS * 1e6
        ev: dict[str, list] = {"ts": [0], "item": [7], "act": ["v"]}
        t = time.thread_time()
        for i, u in enumerate(picks):
            ev["ts"][0] = 10**6 + i
            v.append(u, ev)
        append_us = (time.thread_time() - t) / CALLS * 1e6
        flush_us = []
        for again in (0, 1):
            for u in range(USERS):
                v.append(u, {"ts": [2 * 10**6 + again], "item": [2], "act": ["v"]})
            t = time.thread_time()
            v.flush()
            flush_us.append((time.thread_time() - t) / USERS * 1e6)
        v.close(flush=False)
        return get_us, append_us, flush_us[0], flush_us[1]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    runs = [run(s) for s in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5)]
    for i, name in enumerate(("read last 100", "append(1)", "flush/user, 1st",
                              "flush/user, 2nd")):
        vals = [r[i] for r in runs]
        print(f"{name:15s} thread-CPU µs: median {statistics.median(vals):7.1f}  "
              f"runs {[round(x, 1) for x in vals]}")


if __name__ == "__main__":
    main()
