"""The probe behind docs/design/realtime.md, "Direct writes for sync appends": one caller's
durable 120-byte record writes per second, four ways, into a zero-filled, fsynced file.

    python bench/results/device-direct-sync/probe.py [DIR]
"""

from __future__ import annotations

import mmap
import os
import sys
import time

RECORD = 120
SIZE = 64 << 20


def run(path: str, name: str, flags: int, direct: bool, sync: bool, secs: float = 1.5) -> None:
    fd = os.open(path, os.O_RDWR | flags)
    buf = mmap.mmap(-1, 8192) if direct else None  # page-aligned, as O_DIRECT needs
    rec = os.urandom(RECORD)
    pos = n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < secs and pos + 8192 <= SIZE:
            if buf is not None:
                off = pos & ~4095  # the block holding the record, rewritten whole
                buf[pos - off:pos - off + RECORD] = rec
                length = 8192 if pos - off + RECORD > 4096 else 4096
                os.pwrite(fd, memoryview(buf)[:length], off)
                if length == 8192:
                    buf[:4096] = buf[4096:]
            else:
                os.pwrite(fd, rec, pos)
            if sync:
                os.fdatasync(fd)
            pos += RECORD
            n += 1
        rate = n / (time.perf_counter() - t0)
        print(f"{name:40s} {rate:10.0f}/s  {1e6 / rate:7.1f} us", flush=True)
    except OSError as exc:
        print(f"{name:40s} {exc}", flush=True)
    finally:
        os.close(fd)


def main() -> None:
    where = sys.argv[1] if len(sys.argv) > 1 else "."
    path = os.path.join(where, "fua-probe")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, bytes(SIZE), 0)
    os.fsync(fd)
    os.close(fd)
    try:
        run(path, "pwrite+fdatasync", 0, False, True)
        run(path, "O_DSYNC pwrite", os.O_DSYNC, False, False)
        run(path, "O_DIRECT pwrite4k+fdatasync", os.O_DIRECT, True, True)
        run(path, "O_DIRECT|O_DSYNC pwrite4k", os.O_DIRECT | os.O_DSYNC, True, False)
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
