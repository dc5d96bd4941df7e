"""Keep a worker's resident memory flat: glibc malloc settings for a server of large arrays.

glibc raises its mmap threshold each time a large mmap'd block is freed (up to 32 MiB), after
which large arrays come from the heap arenas and their pages stay resident when freed; each
thread of the pool also gets its own arena. A worker that once built a big response then
kept gigabytes (finding 1 of issue 13: 2.0 GB after a 5.0 GB peak). Fixing the threshold
makes every large array (numpy columns, encoded bodies) its own mapping, returned to the OS
the moment it is freed. No-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 10  # blocks at or above this are mmap'd (fixed: no dynamic growth)
TRIM_THRESHOLD = 4 << 20  # free heap top above this is given back


def tune_malloc() -> bool:
    """Apply the settings above to this process (idempotent). False when not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    return ok


def rss_bytes(pid: int | None = None) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process from /proc/<pid>/status: resident now and at peak."""
    path = f"/proc/{pid or os.getpid()}/status"
    now = peak = 0
    with open(path) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return now, peak
