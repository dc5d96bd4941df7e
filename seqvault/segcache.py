"""Decoded segments kept in DRAM, by extent: the read path's counterpart of RocksDB's block
cache (which holds *uncompressed* blocks, so a RocksDB read of a hot key decompresses
nothing). Decisions and numbers: docs/design/realtime.md, "Decoded-segment cache".

Why it is safe to key by (file, offset, length): a published extent's bytes never change.
Files are append-only, file ids are never reused (manifest: `next_file_id` only grows), and
only unpublished bytes are ever cut (a rolled-back or torn write), which no read can reach.
Space reclamation copies segments byte for byte to new extents and deletes the old file, so an
entry of a deleted file still holds exactly the events it held; `drop_file` frees it early.

What a hit skips is the pread, the checksums and the decode. The checksums were verified when
the entry was filled, so a hit never serves bytes that failed a check; damage that happens on
disk *after* a segment was cached is found by the next read after eviction, by `verify`, by a
merge, or by any other process (each has its own cache). `read_cache_bytes=0` turns it off.

Entries are whole columns (every row), filled column by column as reads ask for them; callers
get copies, never the cached arrays.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

# Per entry: bookkeeping beyond the arrays' bytes (dict, tuple, array headers), so that a cache
# of many tiny segments is still bounded by what it really holds.
ENTRY_OVERHEAD = 512
COLUMN_OVERHEAD = 112


class Entry:
    """One verified segment: its key bytes, its event count and the columns decoded so far
    (col id -> all values; None: the segment has no such column)."""

    __slots__ = ("key", "count", "ts", "cols", "nbytes")

    def __init__(self, key: bytes, count: int, ts: np.ndarray) -> None:
        self.key = key
        self.count = count
        self.ts = ts
        self.cols: dict[int, np.ndarray | None] = {}
        self.nbytes = ENTRY_OVERHEAD + ts.nbytes


class SegmentCache:
    """LRU of decoded segments, bounded in bytes. Thread-safe (reads run in many threads)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[int, int, int], Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, file_id: int, offset: int, length: int) -> Entry | None:
        k = (file_id, offset, length)
        with self._lock:
            e = self._entries.get(k)
            if e is None:
                self.misses += 1
                return None
            self._entries.move_to_end(k)
            self.hits += 1
            return e

    def put(self, file_id: int, offset: int, length: int, key: bytes, count: int,
            ts: np.ndarray, cols: dict[int, np.ndarray | None]) -> None:
        """Add (or complete) the entry of one verified segment. `ts` and `cols` hold every
        row; the cache keeps its own copies' ownership (callers must not write to them)."""
        k = (file_id, offset, length)
        with self._lock:
            e = self._entries.get(k)
            if e is None:
                e = Entry(key, count, ts)
                if e.nbytes > self.max_bytes:
                    return
                self._entries[k] = e
                self._bytes += e.nbytes
            for cid, a in cols.items():
                if cid not in e.cols:
                    e.cols[cid] = a
                    grow = COLUMN_OVERHEAD + (a.nbytes if a is not None else 0)
                    e.nbytes += grow
                    self._bytes += grow
            self._entries.move_to_end(k)
            while self._bytes > self.max_bytes and self._entries:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.nbytes

    def drop_file(self, file_id: int) -> None:
        """Forget every entry of a deleted file (they would only wait for eviction)."""
        with self._lock:
            for k in [k for k in self._entries if k[0] == file_id]:
                self._bytes -= self._entries.pop(k).nbytes

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"read_cache_bytes": self._bytes, "read_cache_segments": len(self._entries),
                    "read_cache_hits": self.hits, "read_cache_misses": self.misses}
