"""Bulk writes of lifetime segments, published all at once (used by ingest and merge).

A `BulkWriter` takes the store's writer lock for its whole life, seals the memtable first
(so every existing event is in an extent and the log is empty), then accepts users one at a
time. For each user it folds the events already stored (older arrivals) with the new ones
(newer arrivals) into lifetime segments, written to fresh `lt` files that nothing refers to
yet. `commit()` publishes every user's new extent list, the new file sizes and the new
dictionary entries in one LMDB transaction; until then a crash or `abort()` leaves the store
exactly as it was (unpublished files are deleted when the store is next opened).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import StoreClosed
from .index import Extent, user_hash
from .layout import segment_bounds
from .segment import key_bytes

if TYPE_CHECKING:
    from .vault import SeqVault

class BulkWriter:
    def __init__(self, vault: SeqVault, *, segment_events: int | None = None,
                 merge_existing: bool = True) -> None:
        self.vault = vault
        self.segment_events = int(segment_events or vault.settings.get(
            "lifetime_segment_events", 32_768))
        self.merge_existing = merge_existing
        self.new_lists: dict[int, list[Extent]] = {}
        self.users = 0
        self.events = 0
        self.bytes_written = 0
        self.replaced_bytes = 0
        self._done = False
        vault._writable()
        vault._lock.acquire()
        self._locked = True
        try:
            vault.flush()
            self._dict_sizes = {n: len(d.values) for n, d in vault.dicts.items()}
            self._files_before = set(vault.catalog)
            self._appender_sizes = {k: a.size for k, a in vault._appenders.items()}
        except BaseException:
            self._unlock()
            raise

    def existing(self, key: Any) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """The user's stored events (all columns, ascending ts, string columns as codes)."""
        v = self.vault
        kb = key_bytes(key)[1]
        h = user_hash(kb)
        extents = self.new_lists.get(h)
        if extents is None:
            extents = v.index.extents_of(h)
        if not extents:
            return None
        ids = [c.id for c in v.schema.columns]
        ts_parts: list[np.ndarray] = []
        col_parts: dict[str, list[np.ndarray]] = {c.name: [] for c in v.schema.columns}
        from .reads import Source

        for i, e in enumerate(reversed(extents)):
            ts, by_id = v._decode_source(Source(i, e.count, e.min_ts, e.max_ts, extent=e),
                                         kb, key, ids)
            ts_parts.append(ts)
            for c in v.schema.columns:
                arr = by_id.get(c.id)
                if arr is None:
                    if c.is_string:
                        arr = v.dicts[c.name].encode(np.full(ts.size, c.default, dtype=object))
                    else:
                        arr = np.full(ts.size, c.default, dtype=c.dtype)
                col_parts[c.name].append(arr)
        ts_all = np.concatenate(ts_parts)
        cols = {k: np.concatenate(p) for k, p in col_parts.items()}
        if len(ts_parts) > 1:
            order = np.argsort(ts_all, kind="stable")
            ts_all = ts_all[order]
            cols = {k: a[order] for k, a in cols.items()}
        return ts_all, cols

    def add(self, key: Any, ts: np.ndarray, cols: dict[str, np.ndarray], *,
            encoded: bool = False, replace: bool = False) -> int:
        """Add one user's events (validated; string columns as str objects unless `encoded`).
        New events count as arriving after everything stored; ties keep that order."""
        v = self.vault
        if self._done:
            raise StoreClosed("bulk writer already committed or aborted")
        if not encoded:
            cols = {name: (v.dicts[name].encode(arr) if name in v.dicts else arr)
                    for name, arr in cols.items()}
        kb = key_bytes(key)[1]
        h = user_hash(kb)
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
        v = self.vault
        prior = self.new_lists.get(h)
        if prior is None:
            prior = v.index.extents_of(h)
        self.replaced_bytes += sum(e.length for e in prior)
        fresh: list[Extent] = []
        n = int(ts.size)
        bounds = segment_bounds(ts, self.segment_events)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            blob = v._encode_user_segment(key, ts[lo:hi], {k: a[lo:hi] for k, a in cols.items()})
            app = v._appender("lt", len(blob))
            off = app.append(blob)
            self.bytes_written += len(blob)
            fresh.append(Extent(app.file_id, off, len(blob), hi - lo, int(ts[lo]), int(ts[hi - 1])))
        self.new_lists[h] = list(reversed(fresh))
        self.users += 1
        self.events += n
        return n

    def add_encoded(self, users: list[tuple[Any, bytes, int, int, int]]) -> int:
        """Add users the store does not hold yet, each as one ready-made segment
        (key, blob, count, min_ts, max_ts): the ingest fast path (seqvault/ingest/fastpath.py),
        which encodes many small users at once. Blobs are appended in large writes. Raises
        ValueError if a user already has events (use add() to merge)."""
        v = self.vault
        if self._done:
            raise StoreClosed("bulk writer already committed or aborted")
        check = len(v.index) > 0 or bool(self.new_lists)
        hashes = [user_hash(key_bytes(u[0])[1]) for u in users]
        if check:
            for (key, *_rest), h in zip(users, hashes):
                if h in self.new_lists or v.index.find(h) >= 0:
                    raise ValueError(f"user {key!r} already has events; use add() to merge")
        n = 0
        i = 0
        chunk_limit = 8 << 20
        while i < len(users):
            j, size = i, 0
            while j < len(users) and (j == i or size + len(users[j][1]) <= chunk_limit):
                size += len(users[j][1])
                j += 1
            app = v._appender("lt", size)
            off = app.append(b"".join(u[1] for u in users[i:j]))
            for (_key, blob, count, mn, mx), h in zip(users[i:j], hashes[i:j]):
                self.new_lists[h] = [Extent(app.file_id, off, len(blob), count, mn, mx)]
                off += len(blob)
                n += count
            self.bytes_written += size
            i = j
        self.users += len(users)
        self.events += n
        return n

    def commit(self, extra: Callable[[Any], None] | None = None) -> None:
        """Publish everything in one transaction (`extra(txn)` may add ledger entries)."""
        v = self.vault
        try:
            for app in v._appenders.values():
                app.sync()
            from .wal import fsync_dir

            fsync_dir(v.path / "data")
            if any(d.pending() for d in v.dicts.values()):
                # New dictionary strings reach read-only processes only with a log rotation
                # (they assign codes by replaying the log since the last one): rotate in this
                # same transaction. The log is empty (flushed at start; appends wait on the lock).
                self._rotate_and_publish(extra)
            else:
                v._publish(self.new_lists, extra=extra)
            self._done = True
        except BaseException:
            self.abort()
            raise
        finally:
            self._unlock()

    def _rotate_and_publish(self, extra: Callable[[Any], None] | None) -> None:
        from . import wal as wal_mod

        v = self.vault
        new_id = v.wal_id + 1
        new_path = v.path / "wal" / wal_mod.wal_name(new_id)
        wal_mod.create_wal(new_path, new_id)
        try:
            v._publish(self.new_lists, new_wal_id=new_id, extra=extra)
        except BaseException:
            new_path.unlink(missing_ok=True)
            raise
        old = v.wal
        v.wal = wal_mod.WalWriter(new_path, v.settings["durability"],
                                  batch_interval=v.settings["batch_interval"])
        if old is not None:
            old.close()
            old.path.unlink(missing_ok=True)

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            self.vault._lock.release()

    def abort(self) -> None:
        """Forget everything written (files stay unpublished and are cut/deleted)."""
        if self._done:
            return
        v = self.vault
        self._done = True
        for name, size in self._dict_sizes.items():
            v.dicts[name].truncate(size)
        for kind, app in list(v._appenders.items()):
            before = self._appender_sizes.get(kind)
            if app.file_id not in self._files_before or before is None:
                app.close()
                del v._appenders[kind]
                v.catalog.pop(app.file_id, None)
                v.files.forget(app.file_id)
                app.path.unlink(missing_ok=True)
            else:
                os.ftruncate(app.fd, before)
                app.size = before
        self._unlock()

    def __enter__(self) -> BulkWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None or not self._done:
            if exc_type is None:
                self.commit()
            else:
                self.abort()
