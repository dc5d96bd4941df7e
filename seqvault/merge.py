"""Lifetime merge: fold users' real-time segments into large lifetime segments, apply
retention, reclaim files that are mostly garbage, optionally in a background thread.

The algorithm, the crash-safety argument and the thresholds are in docs/design/merge.md. In
short, for a batch of users:

1. under the store lock, snapshot each user's extent list (newest first) and the schema;
2. without the lock, read and decode the extents to rewrite (the oldest run of full lifetime
   segments that later events do not overlap is kept as it is), concatenate them in arrival
   order, stable-sort by timestamp, apply retention, split evenly into segments of at most
   ``lifetime_segment_events`` and append them to the merger's own ``lt`` file;
3. fsync that file (and the directory when the file is new);
4. under the store lock, publish the batch in one LMDB transaction with compare-and-swap: a
   flush may have prepended new real-time extents meanwhile, so the user's new list is
   ``[extents added since the snapshot] + [new lifetime extents] + [kept extents]``; a user
   whose snapshot part changed in any other way is skipped (the new bytes become garbage).

Reads never wait on steps 2–3; appends and flushes only wait for the short publish.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CorruptionError, StoreClosed
from .files import FileAppender, file_name
from .index import Extent, pack_extents, user_hash
from .layout import expected_segments, segment_bounds
from .meta import delta_key, pack
from .reads import MISSING_CODE  # a string column absent from a segment
from .reclaim import drop_dead_files, extent_map, live_bytes, seal_appenders
from .schema import TIME_UNITS, Schema
from .segment import TIME_COLUMN_ID, decode_columns, encode_segment, key_bytes, parse_header
from .validate import coerce_user
from .wal import fsync_dir

if TYPE_CHECKING:
    from .vault import SeqVault

FAULT_ENV = "SEQVAULT_FAULT"
FAULT_POINTS = (
    "merge:after_snapshot",  # extent lists snapshotted, nothing written
    "merge:after_write",  # new segments written to the lt file, not fsynced
    "merge:after_sync",  # lt file fsynced, nothing published
    "merge:after_commit",  # batch published (LMDB committed)
    "reclaim:after_drop_commit",  # dead files dropped from the catalog, not yet unlinked
    "reclaim:after_unlink",  # dead files unlinked
)

# Settings (persisted with the store like the others; see DEFAULT_SETTINGS in vault.py).
MERGE_DEFAULTS: dict[str, Any] = {
    "reclaim_ratio": 0.5,  # rewrite a file's live extents when live/size falls below this
    "merge_batch_users": 256,  # users per publish (one LMDB transaction)
    "merge_interval": 0.5,  # background: seconds between passes when there is work
    "merge_duty": 0.5,  # background: fraction of wall time the merge thread may work
    "merge_trigger_flushes": 1,  # background: start a pass after this many unmerged flushes
    "merge_backpressure_flushes": 64,  # appends wait when this many flushes are unmerged ...
    "merge_backpressure_wait": 30.0,  # ... for at most this many seconds per append
    "idle_reclaim_ratio": 0.9,  # background, nothing to merge: reclaim down to 10% garbage
    "merge_nice": 10,  # background: CPU niceness of the merge thread (Linux), reads go first
}


def lower_thread_priority(nice: int) -> None:
    """Raise this thread's niceness by `nice` (Linux: per thread; elsewhere a no-op)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError:
        pass


def _setting(vault: SeqVault, name: str) -> Any:
    return vault.settings.get(name, MERGE_DEFAULTS[name])


class _Faults:
    """Test hook: SEQVAULT_FAULT="point[@n][,point[@n]...]" SIGKILLs this process at the n-th
    time (default 1st) it passes `point`."""

    def __init__(self) -> None:
        self.spec: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        for part in os.environ.get(FAULT_ENV, "").split(","):
            part = part.strip()
            if not part:
                continue
            name, _, n = part.partition("@")
            self.spec[name] = int(n) if n else 1

    def __call__(self, point: str) -> None:
        if point not in self.spec:
            return
        self.hits[point] = self.hits.get(point, 0) + 1
        if self.hits[point] >= self.spec[point]:
            os.kill(os.getpid(), signal.SIGKILL)


class Merger:
    """One per writer. Serialises merges (`mutex`) and owns a private ``lt`` file."""

    def __init__(self, vault: SeqVault) -> None:
        self.vault = vault
        self.mutex = threading.Lock()
        self._app: FileAppender | None = None
        self.fault = _Faults()
        self.merged_through_flush = vault._counters.get("flushes", 0)
        self.totals: dict[str, int] = {"merge_passes": 0, "merged_users": 0,
                                       "merged_events": 0, "merge_bytes_written": 0,
                                       "merge_skipped_users": 0, "reclaimed_files": 0,
                                       "reclaimed_bytes": 0}
        self.progress = threading.Condition()

    # ------------------------------------------------------------------ files
    def active_files(self) -> set[int]:
        return {self._app.file_id} if self._app is not None else set()

    def _appender_for(self, need: int, touched: dict[int, FileAppender]) -> FileAppender:
        v = self.vault
        app = self._app
        if app is not None and app.size + need > v.settings["max_file_bytes"] and app.size > 0:
            touched[app.file_id] = app  # published with this batch, closed after
            self._app = app = None
        if app is None:
            with v._lock:
                fid = v._new_file_id("lt")
                v.catalog[fid]["sealed"] = True  # the store's own appenders never reuse it
            app = FileAppender(v.path / "data" / file_name("lt", fid), fid, "lt")
            self._new_file = True
            self._app = app
        return app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None

    # ------------------------------------------------------------------ planning
    def _plan(self, users: Iterable[Any] | None, reclaim: bool, ratio: float,
              only_files: set[int] | None = None) -> tuple[list[int], set[int], int | None]:
        """Hashes of users with work to do, files to reclaim, and the max_age cutoff."""
        v = self.vault
        target = int(v.settings["lifetime_segment_events"])
        with v._lock:
            schema = v.schema
            idx = v.index
            n = idx.n_users
            emap = extent_map(idx)
            live = live_bytes(idx, emap)
            max_fid = max(max(v.catalog, default=0), int(idx.e_file[emap.slots].max())
                          if emap.slots.size else 0)
            is_rt = np.zeros(max_fid + 1, dtype=bool)
            for fid, info in v.catalog.items():
                is_rt[fid] = info.get("kind") == "rt"
            active = {app.file_id for app in v._appenders.values()} | self.active_files()
            cands: set[int] = set()
            if only_files is not None:
                cands = set(only_files)
            elif reclaim:
                for fid, info in v.catalog.items():
                    size = int(info.get("size", 0))
                    if fid not in active and size > 0 and live.get(fid, 0) / size < ratio:
                        cands.add(fid)
            files = idx.e_file[emap.slots].astype(np.int64)
            need = np.zeros(n, dtype=bool)
            cutoff = _cutoff(schema)
            if only_files is None:
                heads = idx.u_head[:n].astype(np.int64)
                has = heads >= 0
                need[has] = is_rt[idx.e_file[heads[has]].astype(np.int64)]
                # More segments than the canonical recency-tiered layout (+1 for the remainder
                # left next to kept segments): small lifetime segments to fold together.
                nseg = np.bincount(emap.owners, minlength=n)[:n]
                need |= nseg > expected_segments(idx.u_count[:n], target) + 1
                if schema.retention.max_events is not None:
                    need |= idx.u_count[:n] > schema.retention.max_events
                if cutoff is not None and emap.slots.size:
                    mins = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
                    np.minimum.at(mins, emap.owners, idx.e_min[emap.slots])
                    need |= mins < cutoff
            in_cands = np.zeros(n, dtype=bool)
            if cands and emap.slots.size:
                hit = np.isin(files, np.fromiter(cands, dtype=np.int64))
                in_cands[emap.owners[hit]] = True
            if users is not None:
                want = np.zeros(n, dtype=bool)
                for u in users:
                    row = idx.find(user_hash(key_bytes(coerce_user(schema, u))[1]))
                    if row >= 0:
                        want[row] = True
                # an explicit request also compacts users with more than one extent
                nseg = np.bincount(emap.owners, minlength=n)[:n]
                need = want & (need | (nseg > 1))
            need |= in_cands  # reclamation is about files: their users, whoever was asked for
            rows = np.nonzero(need)[0]
            hashes = [int(h) for h in idx.u_hash[rows]]
        return hashes, cands, cutoff

    # ------------------------------------------------------------------ the pass
    def run(self, users: Iterable[Any] | None = None, *, reclaim: bool = True,
            stop: threading.Event | None = None, duty: float = 1.0,
            reclaim_ratio: float | None = None, niced: bool = False) -> dict[str, Any]:
        """One merge pass (see `SeqVault.merge`). `niced`: run it in a worker thread with the
        `merge_nice` CPU niceness (the caller waits), so that reads are scheduled first."""
        ratio = float(reclaim_ratio if reclaim_ratio is not None
                      else _setting(self.vault, "reclaim_ratio"))
        if not niced or int(_setting(self.vault, "merge_nice")) <= 0:
            with self.mutex:
                return self._run(users, reclaim=reclaim, stop=stop, duty=duty, ratio=ratio)
        result: dict[str, Any] = {}
        failure: list[BaseException] = []

        def work() -> None:
            lower_thread_priority(int(_setting(self.vault, "merge_nice")))
            try:
                with self.mutex:
                    result.update(self._run(users, reclaim=reclaim, stop=stop, duty=duty,
                                            ratio=ratio))
            except BaseException as exc:  # re-raised in the caller
                failure.append(exc)

        worker = threading.Thread(target=work, name="seqvault-merge-pass")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]
        return result

    def _run(self, users: Iterable[Any] | None, *, reclaim: bool, stop: threading.Event | None,
             duty: float, ratio: float) -> dict[str, Any]:
        v = self.vault
        v._writable()
        t0 = time.perf_counter()
        flushes_at_start = v._counters.get("flushes", 0)
        summary: dict[str, Any] = {
            "users_considered": 0, "users_merged": 0, "users_skipped": 0, "segments_in": 0,
            "segments_out": 0, "events_in": 0, "events_out": 0, "bytes_read": 0,
            "bytes_written": 0, "retention_dropped": {"max_age": 0, "max_events": 0},
            "files_reclaimed": 0, "bytes_reclaimed": 0, "files_sealed": 0,
        }
        user_list = list(users) if users is not None else None
        only: set[int] | None = None
        start_file = self._app.file_id if self._app is not None else None
        start_size = self._app.size if self._app is not None else 0
        for _round in range(2):
            hashes, cands, cutoff = self._plan(user_list, reclaim, ratio, only)
            summary["users_considered"] += len(hashes)
            self._merge_users(hashes, cands, cutoff, summary, stop, duty)
            if stop is not None and stop.is_set():
                break
            if not reclaim:
                break
            with v._lock:
                live = live_bytes(v.index)
                sealed = seal_appenders(v, live, ratio)
                app = self._app
                if app is not None and app.size and live.get(app.file_id, 0) / app.size < ratio:
                    app.sync()
                    app.close()
                    self._app = None
                    v.catalog[app.file_id]["size"] = app.size
                    sealed.append(app.file_id)
            dropped = drop_dead_files(v, None, sealed, self.fault)
            summary["files_reclaimed"] += dropped["files"]
            summary["bytes_reclaimed"] += dropped["bytes"]
            summary["files_sealed"] += len(sealed)
            with v._lock:
                still = {fid for fid in sealed if fid in v.catalog}
            if not still or user_list is not None:
                break
            only = still  # sealed files that still hold live extents: rewrite them now
        app = self._app
        if app is not None and app.size:
            fresh = app.size - (start_size if app.file_id == start_file else 0)
            if fresh * 2 >= app.size:
                # This pass wrote most of the file: start the next pass in a new one, so that when
                # the next pass rewrites the same (active) users this file dies almost whole and
                # is dropped with little or nothing to copy (generational, like the rt files).
                app.sync()
                app.close()
                self._app = None
        with v._lock:
            # Index deltas cost more than a checkpoint (~62 B/user) once there are about half as
            # many as users: checkpoint then, so LMDB frees their pages for reuse.
            pending = getattr(v, "_deltas_since_ckpt", 0)
            if not v._closed and pending >= max(1_000, len(v.index) // 2):
                v.checkpoint()
        if not (stop is not None and stop.is_set()) and user_list is None:
            self.merged_through_flush = max(self.merged_through_flush, flushes_at_start)
        secs = time.perf_counter() - t0
        summary["seconds"] = round(secs, 6)
        summary["events_per_s"] = round(summary["events_in"] / secs, 1) if secs > 0 else 0.0
        t = self.totals
        t["merge_passes"] += 1
        t["merged_users"] += summary["users_merged"]
        t["merged_events"] += summary["events_in"]
        t["merge_bytes_written"] += summary["bytes_written"]
        t["merge_skipped_users"] += summary["users_skipped"]
        t["reclaimed_files"] += summary["files_reclaimed"]
        t["reclaimed_bytes"] += summary["bytes_reclaimed"]
        with self.progress:
            self.progress.notify_all()
        return summary

    def _merge_users(self, hashes: list[int], cands: set[int], cutoff: int | None,
                     summary: dict[str, Any], stop: threading.Event | None,
                     duty: float) -> None:
        v = self.vault
        batch = max(1, int(_setting(v, "merge_batch_users")))
        for start in range(0, len(hashes), batch):
            if stop is not None and stop.is_set():
                return
            tb = time.perf_counter()
            chunk = hashes[start:start + batch]
            with v._lock:
                v._writable()
                schema = v.schema
                snaps = [(h, v.index.extents_of(h)) for h in chunk]
                kinds = {fid: info.get("kind", "rt") for fid, info in v.catalog.items()}
            self.fault("merge:after_snapshot")
            touched: dict[int, FileAppender] = {}
            self._new_file = False
            results = []
            try:
                for h, snap in snaps:
                    if not snap:
                        continue
                    res = self._rebuild(h, snap, schema, kinds, cands, cutoff, touched, summary)
                    if res is not None:
                        results.append(res)
            except BaseException:
                self._rollback(touched)
                raise
            if self._app is not None:
                touched[self._app.file_id] = self._app
            if not results:
                self._close_rotated(touched)
                continue
            self.fault("merge:after_write")
            for app in touched.values():
                app.sync()
            if self._new_file:
                fsync_dir(v.path / "data")
            self.fault("merge:after_sync")
            self._publish(results, touched, summary)
            self.fault("merge:after_commit")
            self._close_rotated(touched)
            if duty < 1.0:
                pause = (time.perf_counter() - tb) * (1.0 - duty) / max(duty, 0.01)
                if stop is not None:
                    stop.wait(pause)
                else:
                    time.sleep(pause)

    def _close_rotated(self, touched: dict[int, FileAppender]) -> None:
        for fid, app in touched.items():
            if self._app is None or fid != self._app.file_id:
                app.close()

    def _rollback(self, touched: dict[int, FileAppender]) -> None:
        """A batch failed before publishing: cut what it wrote (nothing refers to it)."""
        v = self.vault
        for fid, app in list(touched.items()) + ([(self._app.file_id, self._app)]
                                                  if self._app is not None else []):
            published = int(v.catalog.get(fid, {}).get("size", 0))
            if app.size > published:
                os.ftruncate(app.fd, published)
                app.size = published
        self._close_rotated(touched)

    # ------------------------------------------------------------------ one user
    def _rebuild(self, h: int, snap: list[Extent], schema: Schema, kinds: dict[int, str],
                 cands: set[int], cutoff: int | None,
                 touched: dict[int, FileAppender], summary: dict[str, Any]
                 ) -> tuple[int, list[Extent], list[Extent], int, int] | None:
        v = self.vault
        target = max(1, int(v.settings["lifetime_segment_events"]))
        old_first = list(reversed(snap))
        total = sum(e.count for e in old_first)
        r = schema.retention
        retain = ((r.max_events is not None and total > r.max_events)
                  or (cutoff is not None and min(e.min_ts for e in old_first) < cutoff))
        i = 0
        if not retain:
            # Keep the oldest run of full lifetime segments that nothing later overlaps.
            suffix_min = [0] * (len(old_first) + 1)
            suffix_min[-1] = np.iinfo(np.int64).max
            for j in range(len(old_first) - 1, -1, -1):
                suffix_min[j] = min(old_first[j].min_ts, suffix_min[j + 1])
            prev = np.iinfo(np.int64).min
            while i < len(old_first):
                e = old_first[i]
                if (kinds.get(e.file) == "lt" and e.file not in cands
                        and e.count >= target // 2 and e.min_ts >= prev
                        and e.max_ts <= suffix_min[i + 1]):
                    prev = e.max_ts
                    i += 1
                else:
                    break
        kept, rewrite = old_first[:i], old_first[i:]
        if not rewrite:
            return None
        if (len(rewrite) == 1 and kinds.get(rewrite[0].file) == "lt" and not retain
                and rewrite[0].file not in cands):
            return None  # already one lifetime segment
        kb = b""
        key: Any = None
        ts_parts: list[np.ndarray] = []
        col_parts: dict[int, list[np.ndarray]] = {c.id: [] for c in schema.columns}
        for e in rewrite:
            where = f"{v.files.path(e.file)} @ {e.off}"
            buf = v.files.pread(e.file, e.off, e.length)
            try:
                header = parse_header(buf, where=where)
                if key is None:
                    kb = header.key
                    from .segment import key_from_bytes

                    key = key_from_bytes(header.key_type, header.key)
                    if user_hash(kb) != h:
                        raise CorruptionError(f"{where}: segment key does not hash to the "
                                              "user's index entry")
                where = f"{where} (user {key!r})"
                if header.key != kb:
                    raise CorruptionError(f"{where}: segment belongs to another user")
                if header.count != e.count:
                    raise CorruptionError(f"{where}: segment holds {header.count} events, the "
                                          f"index says {e.count}")
                cols = decode_columns(buf, header, [TIME_COLUMN_ID, *col_parts], where=where)
            except CorruptionError as exc:
                exc.path = str(v.files.path(e.file))
                exc.user = key
                if "(user " not in str(exc.args[0]) and key is not None:
                    exc.args = (f"{exc.args[0]} (user {key!r})", *exc.args[1:])
                raise
            ts = cols.pop(TIME_COLUMN_ID)
            ts_parts.append(ts)
            for c in schema.columns:
                got = cols.get(c.id)
                if got is None:  # column added after this segment was written: string
                    # columns keep the "absent" code, which reads turn into the default (no new
                    # dictionary entry, which readers could only learn from a log rotation)
                    got = np.full(ts.size, MISSING_CODE if c.is_string else c.default,
                                  dtype=np.uint32 if c.is_string else c.dtype)
                col_parts[c.id].append(got)
            summary["bytes_read"] += e.length
        ts_all = np.concatenate(ts_parts)
        colv = {cid: np.concatenate(parts) for cid, parts in col_parts.items()}
        if len(ts_parts) > 1:
            order = np.argsort(ts_all, kind="stable")  # ties keep arrival order
            ts_all = ts_all[order]
            colv = {cid: a[order] for cid, a in colv.items()}
        n_in = int(ts_all.size)
        dropped_age = dropped_count = 0
        if cutoff is not None and n_in and int(ts_all[0]) < cutoff:
            lo = int(np.searchsorted(ts_all, cutoff, side="left"))
            dropped_age = lo
            ts_all = ts_all[lo:]
            colv = {cid: a[lo:] for cid, a in colv.items()}
        if r.max_events is not None and ts_all.size > r.max_events:
            lo = int(ts_all.size - r.max_events)
            dropped_count = lo
            ts_all = ts_all[lo:]
            colv = {cid: a[lo:] for cid, a in colv.items()}
        n = int(ts_all.size)
        fresh: list[Extent] = []
        level_default = int(v.settings["zstd_level"])
        if n:
            bounds = segment_bounds(ts_all, target)  # the same layout as a bulk load
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                if hi <= lo:
                    continue
                blob = encode_segment(
                    key, schema.version, ts_all[lo:hi],
                    ((c.id, c.type, colv[c.id][lo:hi],
                      c.level if c.level is not None else level_default)
                     for c in schema.columns))
                app = self._appender_for(len(blob), touched)
                off = app.append(blob)
                fresh.append(Extent(app.file_id, off, len(blob), hi - lo, int(ts_all[lo]),
                                    int(ts_all[hi - 1])))
                summary["bytes_written"] += len(blob)
        summary["segments_in"] += len(rewrite)
        summary["segments_out"] += len(fresh)
        summary["events_in"] += n_in
        summary["events_out"] += n
        tail = list(reversed(fresh)) + list(reversed(kept))
        return h, snap, tail, dropped_age, dropped_count

    # ------------------------------------------------------------------ publish
    def _publish(self, results: list[tuple[int, list[Extent], list[Extent], int, int]],
                 touched: dict[int, FileAppender], summary: dict[str, Any]) -> None:
        v = self.vault
        with v._lock:
            if v._closed:
                raise StoreClosed(f"{v.path} was closed during merge")
            final: dict[int, list[Extent]] = {}
            drop_age = drop_count = 0
            for h, snap, tail, da, dc in results:
                cur = v.index.extents_of(h)
                k = len(cur) - len(snap)
                if k >= 0 and cur[k:] == snap:
                    final[h] = cur[:k] + tail
                    drop_age += da
                    drop_count += dc
                else:
                    summary["users_skipped"] += 1
            seq = v.seq + 1
            with v.meta.begin(write=True) as txn:
                for fid, app in touched.items():
                    info = v.catalog.get(fid, {})
                    v.meta.put(txn, "files", fid.to_bytes(4, "big"), pack(
                        {"kind": "lt", "size": app.size,
                         "created_ns": info.get("created_ns", time.time_ns()), "sealed": True}))
                nxt = int(v.meta.get_meta(txn, "next_file_id", 1) or 1)
                v.meta.set_meta(txn, "next_file_id", max(nxt, max(v.catalog, default=0) + 1))
                for h, extents in final.items():
                    v.meta.put(txn, "delta", delta_key(seq, h), pack_extents(extents))
                if drop_age:
                    v.meta.set_meta(txn, "retention_dropped_age",
                                    int(v.meta.get_meta(txn, "retention_dropped_age", 0)) + drop_age)
                if drop_count:
                    v.meta.set_meta(txn, "retention_dropped_count",
                                    int(v.meta.get_meta(txn, "retention_dropped_count", 0))
                                    + drop_count)
                v.meta.set_meta(txn, "seq", seq)
            v.seq = seq
            for fid, app in touched.items():
                v.catalog.setdefault(fid, {"kind": "lt"})["size"] = app.size
                v.catalog[fid]["sealed"] = True
            for h, extents in final.items():
                v.index.set_extents(h, extents)
            if hasattr(v, "_deltas_since_ckpt"):
                v._deltas_since_ckpt += len(final)
            v._maybe_checkpoint()
        summary["users_merged"] += len(final)
        summary["retention_dropped"]["max_age"] += drop_age
        summary["retention_dropped"]["max_events"] += drop_count

    # ------------------------------------------------------------------ backpressure
    def backlog(self) -> int:
        """Flushes whose real-time segments no completed pass has merged yet."""
        return max(0, self.vault._counters.get("flushes", 0) - self.merged_through_flush)


def _cutoff(schema: Schema) -> int | None:
    if schema.retention.max_age is None:
        return None
    return int((time.time() - schema.retention.max_age) * TIME_UNITS[schema.time_unit])


def retention_counters(vault: SeqVault) -> dict[str, int]:
    with vault.meta.begin() as txn:
        age = int(vault.meta.get_meta(txn, "retention_dropped_age", 0) or 0)
        count = int(vault.meta.get_meta(txn, "retention_dropped_count", 0) or 0)
    return {"retention_dropped_events": age + count, "retention_dropped_by_age": age,
            "retention_dropped_by_count": count}


class BackgroundMerger(threading.Thread):
    """`SeqVault.open(..., auto_merge=True)`: merge passes in a daemon thread, paced by
    `merge_duty`, started when `merge_trigger_flushes` flushes are unmerged; appends wait
    (`throttle`) while `merge_backpressure_flushes` or more are unmerged."""

    def __init__(self, vault: SeqVault, merger: Merger) -> None:
        super().__init__(name=f"seqvault-merge-{vault.path.name}", daemon=True)
        self.vault = vault
        self.merger = merger
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.error: BaseException | None = None
        self.passes = 0
        self._idle_seq = -1

    def run(self) -> None:
        v = self.vault
        m = self.merger
        interval = float(_setting(v, "merge_interval"))
        lower_thread_priority(int(_setting(v, "merge_nice")))
        while not self.stop_event.is_set():
            self.wake.wait(interval)
            self.wake.clear()
            if self.stop_event.is_set():
                break
            try:
                behind = m.backlog()
                if behind < int(_setting(v, "merge_trigger_flushes")):
                    self._idle_compaction()
                    continue
                hard = behind >= int(_setting(v, "merge_backpressure_flushes"))
                duty = 1.0 if hard else float(_setting(v, "merge_duty"))
                m.run(stop=self.stop_event, duty=duty)
                self.passes += 1
            except StoreClosed:
                break
            except BaseException as exc:  # keep the error for stats/close; stop merging
                self.error = exc
                break
            finally:
                with m.progress:
                    m.progress.notify_all()

    def _idle_compaction(self) -> None:
        """Nothing to merge: if garbage exceeds 1 − idle_reclaim_ratio of the data, reclaim
        files below that ratio (once per change of the store: no loop when it cannot help)."""
        v = self.vault
        ratio = float(_setting(v, "idle_reclaim_ratio"))
        with v._lock:
            if v.seq == self._idle_seq:
                return
            data = sum(int(i.get("size", 0)) for i in v.catalog.values())
            live = sum(live_bytes(v.index).values())
        if data and (data - live) / data > 1.0 - ratio:
            self.merger.run(stop=self.stop_event, duty=float(_setting(v, "merge_duty")),
                            reclaim_ratio=ratio)
        with v._lock:
            self._idle_seq = v.seq

    def throttle(self) -> None:
        """Called by appends (outside the store lock): wait while merge is far behind."""
        m = self.merger
        limit = int(_setting(self.vault, "merge_backpressure_flushes"))
        if m.backlog() < limit or not self.is_alive():
            return
        self.wake.set()
        deadline = time.monotonic() + float(_setting(self.vault, "merge_backpressure_wait"))
        with m.progress:
            while (m.backlog() >= max(1, limit // 2) and self.is_alive()
                   and not self.stop_event.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                m.progress.wait(min(left, 0.1))

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()


def merge_stats(vault: SeqVault) -> dict[str, Any]:
    """What `stats()` shows about merge, retention and reclamation (caller holds the lock)."""
    out: dict[str, Any] = dict(retention_counters(vault))
    data = sum(int(info.get("size", 0)) for info in vault.catalog.values())
    cached = getattr(vault, "_live_bytes_cache", None)  # (seq, index object, live bytes)
    if cached is not None and cached[0] == vault.seq and cached[1] is vault.index:
        live = cached[2]
    else:
        live = sum(live_bytes(vault.index).values())
        vault._live_bytes_cache = (vault.seq, vault.index, live)  # type: ignore[attr-defined]
    out["live_bytes"] = live
    out["garbage_bytes"] = max(0, data - live)
    m = getattr(vault, "_merger", None)
    totals = m.totals if m is not None else {
        "merge_passes": 0, "merged_users": 0, "merged_events": 0, "merge_bytes_written": 0,
        "merge_skipped_users": 0, "reclaimed_files": 0, "reclaimed_bytes": 0}
    out.update(totals)
    out["merge_backlog_flushes"] = m.backlog() if m is not None else 0
    bg = getattr(vault, "_bg_merge", None)
    out["auto_merge"] = bool(bg is not None and bg.is_alive())
    out["auto_merge_error"] = repr(bg.error) if bg is not None and bg.error is not None else None
    return out
