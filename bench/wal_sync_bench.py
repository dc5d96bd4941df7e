"""Sync append throughput of the write-ahead log, version 1 against version 2, side by side.

Version 1 appended each record with write() on an O_APPEND descriptor and made it durable with
fsync(): every fsync also persists the grown file size (a journal commit on ext4). Version 2
writes into zero-filled preallocated chunks with pwrite() and uses fdatasync(), which then has no
metadata to persist; it also rewrites the header's synced mark before each fsync (one more
dirty page). The version-1 writer is reproduced here in its essentials (same record size, one
write and one fsync per append); version 2 is `seqvault.wal.WalWriter` itself.

Runs alternate (v1, v2, v1, v2, ...) because this machine is shared; each run reports wall time
and this thread's CPU time per append, and the table gives medians.

    python -m bench.wal_sync_bench --appends 2000 --rounds 5 [--dir /path/on/the/disk]

Writes bench/results/wal-sync.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from seqvault import wal as walmod

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = os.urandom(120)  # about one append of one event


def run_v1(path: Path, n: int) -> tuple[float, float]:
    """The version-1 writer's sync path as it was (commit 0eb11ed): frame with a CRC, one
    write() on an O_APPEND descriptor under the write lock, fsync() under the sync lock."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    os.write(fd, b"SVWL" + bytes(28))
    os.fsync(fd)
    write_lock, sync_lock = threading.Lock(), threading.Lock()
    end = synced = 32
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(n):
        crc = zlib.crc32(PAYLOAD, zlib.crc32(bytes([1])))
        rec = struct.pack("<IIB", len(PAYLOAD), crc, 1) + PAYLOAD
        with write_lock:
            end += os.write(fd, rec)
            mine = end
        if synced < mine:
            with sync_lock:
                if synced < mine:
                    target = end
                    os.fsync(fd)
                    synced = target
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    os.close(fd)
    return wall / n, cpu / n


def run_v2(path: Path, n: int) -> tuple[float, float]:
    walmod.create_wal(path, 1)
    w = walmod.WalWriter(path, "sync")
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(n):
        w.commit(w.append(PAYLOAD, events=1))
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    w.close()
    return wall / n, cpu / n


def run_v2_nomark(path: Path, n: int) -> tuple[float, float]:
    """Version 2 without the header mark: what the mark costs."""
    walmod.create_wal(path, 1)
    w = walmod.WalWriter(path, "sync")
    w._write_mark = lambda pos: None  # type: ignore[method-assign]  # noqa: SLF001
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(n):
        w.commit(w.append(PAYLOAD, events=1))
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    w.close()
    return wall / n, cpu / n


RUNS = (("v1", run_v1), ("v2", run_v2), ("v2-nomark", run_v2_nomark))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--appends", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the logs go (default: a temp dir)")
    args = ap.parse_args()
    out: dict[str, Any] = {"appends": args.appends, "rounds": args.rounds, **{name: [] for name, _f in RUNS}}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.rounds):
            for name, fn in RUNS:
                p = Path(tmp) / f"{name}-{r}.log"
                out[name].append(fn(p, args.appends))
                p.unlink()
    for name, _fn in RUNS:
        walls = [w for w, _c in out[name]]
        cpus = [c for _w, c in out[name]]
        out[f"{name}_median_wall_us"] = statistics.median(walls) * 1e6
        out[f"{name}_median_cpu_us"] = statistics.median(cpus) * 1e6
        out[f"{name}_appends_per_s"] = 1 / statistics.median(walls)
    out["speedup_wall"] = out["v1_median_wall_us"] / out["v2_median_wall_us"]
    res = ROOT / "bench" / "results" / "wal-sync.json"
    res.write_text(json.dumps(out, indent=1))
    print(f"{'':10} {'wall us/append':>15} {'thread CPU us/append':>21} {'appends/s':>10}")
    for name, _fn in RUNS:
        print(f"{name:10} {out[f'{name}_median_wall_us']:15.1f} "
              f"{out[f'{name}_median_cpu_us']:21.1f} {out[f'{name}_appends_per_s']:10.0f}")
    print(f"v2 / v1 throughput: {out['speedup_wall']:.2f}x  (runs: {res})")


if __name__ == "__main__":
    main()
