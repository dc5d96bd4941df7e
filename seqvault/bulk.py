"""Bulk writes of lifetime segments, published all at once (used by ingest and merge).

A `BulkWriter` takes the store lock for its whole life, seals the memtable first
(so every existing event is in an extent and the log is empty), then accepts users one at a
time. For each user it folds the events already stored (older arrivals) with the new ones
(newer arrivals) into lifetime segments, written to fresh `lt` files that nothing refers to
yet. `commit()` publishes every user's new extent list, the new file sizes and the new
dictionary entries in one LMDB transaction; until then a crash or `abort()` leaves the store
exactly as it was (unpublished files are deleted when the store is next opened).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .engine import Engine
from .errors import StoreClosed
from .index import Extent, user_hash
from .layout import segment_bounds
from .manifest import Edit
from .reads import user_events
from .segment import key_bytes
from .segment_writer import encode_user_segment


class BulkWriter:
    def __init__(self, engine: Engine, *, segment_events: int | None = None,
                 merge_existing: bool = True) -> None:
        self.engine = engine
        m = engine.manifest
        self.segment_events = int(segment_events or m.settings["lifetime_segment_events"])
        self.merge_existing = merge_existing
        self.new_lists: dict[int, list[Extent]] = {}
        self.users = 0
        self.events = 0
        self.bytes_written = 0
        self.replaced_bytes = 0
        self._done = False
        engine.check_writable()
        engine.lock.acquire()
        self._locked = True
        try:
            engine.flush()
            self._dict_sizes = {n: len(d.values) for n, d in m.dicts.items()}
            self.writer = engine.writers["lt"]
        except BaseException:
            self._unlock()
            raise

    def existing(self, key: Any) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """The user's stored events (all columns, ascending ts, string columns as codes)."""
        m = self.engine.manifest
        h = m.claim(key)  # its own slot (a hash collision gives a new key another)
        extents = self.new_lists.get(h)
        if extents is None:
            extents = m.index.extents_of(h)
        if not extents:
            return None
        got = user_events(m.files, list(reversed(extents)), m.schema)
        return got.ts, {c.name: got.cols[c.id] for c in m.schema.columns}

    def add(self, key: Any, ts: np.ndarray, cols: dict[str, np.ndarray], *,
            encoded: bool = False, replace: bool = False) -> int:
        """Add one user's events (validated; string columns as str objects unless `encoded`).
        New events count as arriving after everything stored; ties keep that order."""
        m = self.engine.manifest
        if self._done:
            raise StoreClosed("bulk writer already committed or aborted")
        if not encoded:
            cols = {name: (m.dicts[name].encode(arr) if name in m.dicts else arr)
                    for name, arr in cols.items()}
        h = m.claim(key)
        old = None if (replace or not self.merge_existing) else self.existing(key)
        if old is not None:
            old_ts, old_cols = old
            ts = np.concatenate([old_ts, ts])
            cols = {k: np.concatenate([old_cols[k], cols[k]]) for k in cols}
        if ts.size > 1 and bool((np.diff(ts) < 0).any()):
            order = np.argsort(ts, kind="stable")
            ts = ts[order]
            cols = {k: a[order] for k, a in cols.items()}
        return self._write_user(h, key, ts, cols)

    def _write_user(self, h: int, key: Any, ts: np.ndarray, cols: dict[str, np.ndarray]) -> int:
        m = self.engine.manifest
        prior = self.new_lists.get(h)
        if prior is None:
            prior = m.index.extents_of(h)
        self.replaced_bytes += sum(e.length for e in prior)
        fresh: list[Extent] = []
        level = int(m.settings["zstd_level"])
        bounds = segment_bounds(ts, self.segment_events)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            blob = encode_user_segment(m.schema, key, ts[lo:hi],
                                       {k: a[lo:hi] for k, a in cols.items()}, level)
            fresh.append(self.writer.append(blob, hi - lo, int(ts[lo]), int(ts[hi - 1])))
            self.bytes_written += len(blob)
        self.new_lists[h] = list(reversed(fresh))
        self.users += 1
        self.events += int(ts.size)
        return int(ts.size)

    def add_encoded(self, users: list[tuple[Any, bytes, int, int, int]]) -> int:
        """Add users the store does not hold yet, each as one ready-made segment
        (key, blob, count, min_ts, max_ts): the vectorised encoder (seqvault/segment_batch.py),
        which encodes many small users at once. Blobs are appended in large writes. Raises
        ValueError if a user already has events (use add() to merge)."""
        m = self.engine.manifest
        if self._done:
            raise StoreClosed("bulk writer already committed or aborted")
        hashes = [user_hash(key_bytes(u[0])[1]) for u in users]
        if (len(m.index) > 0 or self.new_lists or m.claims
                or len(set(hashes)) < len(hashes)):
            # Slots one by one (`claim`): a key whose default slot is taken — by an existing
            # user or one of this load (a hash collision) — gets another.
            hashes = []
            for key, *_rest in users:
                h = m.claim(key)
                if h in self.new_lists or m.index.has_extents(h):
                    raise ValueError(f"user {key!r} already has events; use add() to merge")
                hashes.append(h)
        else:  # an empty store and distinct hashes: each key takes its default slot
            m.owners.clear()  # (its entries say "free or that key's": not so after this)
            for (key, *_rest), h in zip(users, hashes):
                m.claimed[h] = key_bytes(key)[1]
        n = 0
        i = 0
        chunk_limit = 8 << 20
        while i < len(users):
            j, size = i, 0
            while j < len(users) and (j == i or size + len(users[j][1]) <= chunk_limit):
                size += len(users[j][1])
                j += 1
            fid, off = self.writer.append_many([u[1] for u in users[i:j]])
            for (_key, blob, count, mn, mx), h in zip(users[i:j], hashes[i:j]):
                self.new_lists[h] = [Extent(fid, off, len(blob), count, mn, mx)]
                off += len(blob)
                n += count
            self.bytes_written += size
            i = j
        self.users += len(users)
        self.events += n
        return n

    def commit(self, ledger: list[tuple[bytes, dict[str, Any]]] | None = None) -> None:
        """Publish everything in one transaction (with `ledger` entries: ingest)."""
        e = self.engine
        try:
            self.writer.sync()
            # New dictionary strings reach read-only processes only with a log rotation (they
            # assign codes by replaying the log since the last one): rotate in this same
            # commit. The log is empty (flushed at start; appends wait on the lock).
            rotate = any(d.pending() for d in e.manifest.dicts.values())
            e.publish(Edit(files=self.writer.pending(), users=self.new_lists, dict_entries=True,
                           ledger=list(ledger or ())), rotate_log=rotate, writers=(self.writer,))
            self._done = True
        except BaseException:
            self.abort()
            raise
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            self.engine.lock.release()

    def abort(self) -> None:
        """Forget everything written (files stay unpublished and are cut/deleted)."""
        if self._done:
            return
        self._done = True
        m = self.engine.manifest
        try:
            for name, size in self._dict_sizes.items():
                m.dicts[name].truncate(size)
            m.forget_claims()
            self.writer.rollback()
        finally:  # a rollback that fails (the disk is failing) must not keep the store locked
            self._unlock()

    def __enter__(self) -> BulkWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None or not self._done:
            if exc_type is None:
                self.commit()
            else:
                self.abort()
