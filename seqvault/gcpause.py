"""Python's cyclic garbage collector paused across a full flush.

A memtable of many small append calls holds tens of thousands of chunk objects (a chunk, its
column dict, the list entry), all tracked by the collector. The flush allocates many small
containers of its own (slice tuples, memoryviews), so the collector runs its young
generations dozens of times and now and then a full pass over every tracked object of the
process, and the memtable is most of them: measured on the benchmark's state before calls of
100 (262,115 events in 33,620 chunks, 2-core machine), `flush()` took 0.81 s with the
collector and 0.69 s without (docs/design/realtime.md, "The flush without the collector").
A flush builds no reference cycles, so pausing it loses nothing; it is re-enabled after, and
only if it was enabled before (the caller's own `gc.disable()` is kept). Nested or
concurrent pauses (two stores in one process) count, so the last one out re-enables.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_resume = False  # whether the first pause found the collector enabled


@contextmanager
def paused() -> Iterator[None]:
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
