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

import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from .engine import Engine
from .errors import StoreClosed
from .faults import Faults
from .index import Extent, user_hash
from .layout import RECENT_SEGMENT_EVENTS, expected_segments, segment_bounds
from .manifest import Edit, FileInfo, Purge
from .merge_batch import rebuild_small, small_users
from .reads import user_events
from .reclaim import drop_dead_files, extent_map, live_bytes, seal_writers
from .schema import Schema, retention_cutoff
from .segment import key_bytes
from .segment_writer import SegmentWriter, encode_user_segment
from .validate import coerce_user


def lower_thread_priority(nice: int) -> None:
    """Raise this thread's niceness by `nice` (Linux: per thread; elsewhere a no-op)."""
    import os

    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError:
        pass


class Merger:
    """One per writer. Serialises merges (`mutex`) and owns a private lifetime file."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.mutex = threading.Lock()
        self.writer = SegmentWriter(engine.manifest, "lt", private=True,
                                    on_error=engine.fail_stop)
        self.fault = Faults()
        self.merged_through_flush = engine.flush_count
        self.totals: dict[str, int] = {"merge_passes": 0, "merged_users": 0,
                                       "merged_events": 0, "merge_bytes_written": 0,
                                       "merge_skipped_users": 0, "reclaimed_files": 0,
                                       "reclaimed_bytes": 0}
        self.progress = threading.Condition()

    def setting(self, name: str) -> Any:
        return self.engine.manifest.settings[name]

    def active_files(self) -> set[int]:
        fid = self.writer.file_id
        return {fid} if fid is not None else set()

    def close(self) -> None:
        self.writer.close()

    # ------------------------------------------------------------------ planning
    def _plan(self, users: Iterable[Any] | None, reclaim: bool, ratio: float,
              only_files: set[int] | None = None, force: frozenset[int] = frozenset()
              ) -> tuple[list[int], set[int], int | None]:
        """Hashes of users with work to do, files to reclaim, and the max_age cutoff.
        `force`: files to rewrite whatever their live ratio (they held a deleted user)."""
        e = self.engine
        m = e.manifest
        target = int(self.setting("lifetime_segment_events"))
        with e.lock:
            schema = m.schema
            idx = m.index
            n = idx.n_users
            emap = extent_map(idx)
            live = live_bytes(idx, emap)
            max_fid = max(max(m.catalog, default=0), int(idx.e_file[emap.slots].max())
                          if emap.slots.size else 0)
            is_rt = np.zeros(max_fid + 1, dtype=bool)
            for fid, info in m.catalog.items():
                is_rt[fid] = info.kind == "rt"
            active = e.active_files()
            cands: set[int] = set()
            if only_files is not None:
                cands = set(only_files)
            elif reclaim:
                for fid, info in m.catalog.items():
                    if fid not in active and info.size > 0 and live.get(fid, 0) / info.size < ratio:
                        cands.add(fid)
            cands |= {fid for fid in force if fid in m.catalog and fid not in active}
            files = idx.e_file[emap.slots].astype(np.int64)
            need = np.zeros(n, dtype=bool)
            cutoff = retention_cutoff(schema)
            if only_files is None:
                heads = idx.u_head[:n].astype(np.int64)
                has = heads >= 0
                need[has] = is_rt[idx.e_file[heads[has]].astype(np.int64)]
                nseg = np.bincount(emap.owners, minlength=n)[:n]
                # A user whose whole history is one real-time segment no bigger than the newest
                # tier is already in its lifetime layout (a segment's bytes do not depend on its
                # file): rewriting it would only copy it. Millions of small users loaded by
                # append_batch are left where the flush put them; reclamation moves them when
                # their file is mostly garbage.
                need &= ~((nseg == 1) & (idx.u_count[:n] <= RECENT_SEGMENT_EVENTS))
                # More segments than the canonical recency-tiered layout (+1 for the remainder
                # left next to kept segments): small lifetime segments to fold together.
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
                      else self.setting("reclaim_ratio"))
        if not niced or int(self.setting("merge_nice")) <= 0:
            with self.mutex:
                try:
                    return self._run(users, reclaim=reclaim, stop=stop, duty=duty, ratio=ratio)
                except BaseException as exc:  # a failed write, fsync or unlink: fail-stop
                    self.engine.fail_stop(exc)
                    raise
        result: dict[str, Any] = {}
        failure: list[BaseException] = []

        def work() -> None:
            lower_thread_priority(int(self.setting("merge_nice")))
            try:
                with self.mutex:
                    result.update(self._run(users, reclaim=reclaim, stop=stop, duty=duty,
                                            ratio=ratio))
            except BaseException as exc:  # re-raised in the caller
                self.engine.fail_stop(exc)  # a failed write, fsync or unlink: fail-stop
                failure.append(exc)

        worker = threading.Thread(target=work, name="seqvault-merge-pass")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]
        return result

    def _run(self, users: Iterable[Any] | None, *, reclaim: bool, stop: threading.Event | None,
             duty: float, ratio: float) -> dict[str, Any]:
        e = self.engine
        m = e.manifest
        e.check_writable()
        t0 = time.perf_counter()
        flushes_at_start = e.flush_count
        summary: dict[str, Any] = {
            "users_considered": 0, "users_merged": 0, "users_skipped": 0, "segments_in": 0,
            "segments_out": 0, "events_in": 0, "events_out": 0, "bytes_read": 0,
            "bytes_written": 0, "retention_dropped": {"max_age": 0, "max_events": 0},
            "files_reclaimed": 0, "bytes_reclaimed": 0, "files_sealed": 0,
        }
        user_list = list(users) if users is not None else None
        only: set[int] | None = None
        # Deleted users' bytes (docs/design/safety.md, "Deleting a user"): a full pass rotates
        # the log that holds their records and rewrites the files that held their segments.
        purge = self._purge_prepare() if user_list is None else frozenset()
        start_file, start_size = self.writer.file_id, self.writer.size
        for _round in range(2):
            hashes, cands, cutoff = self._plan(user_list, reclaim, ratio, only,
                                               purge if only is None else frozenset())
            summary["users_considered"] += len(hashes)
            self._merge_users(hashes, cands, cutoff, summary, stop, duty)
            if stop is not None and stop.is_set():
                break
            if not reclaim:
                break
            with e.lock:
                live = live_bytes(m.index)
                sealed = seal_writers(e, live, ratio)
                w = self.writer
                fid = w.file_id
                if fid is not None and w.size and live.get(fid, 0) / w.size < ratio:
                    info = w.seal()
                    if info is not None:
                        sealed[fid] = info
            dropped = drop_dead_files(e, None, sealed, self.fault)
            summary["files_reclaimed"] += dropped["files"]
            summary["bytes_reclaimed"] += dropped["bytes"]
            summary["files_sealed"] += len(sealed)
            with e.lock:
                still = {fid for fid in sealed if fid in m.catalog}
            if not still or user_list is not None:
                break
            only = still  # sealed files that still hold live extents: rewrite them now
        if purge or (user_list is None and m.purge):
            summary.update(self._purge_finish())
        w = self.writer
        if w.size:
            fresh = w.size - (start_size if w.file_id == start_file else 0)
            if fresh * 2 >= w.size:
                # This pass wrote most of the file: start the next pass in a new one, so that when
                # the next pass rewrites the same (active) users this file dies almost whole and
                # is dropped with little or nothing to copy (generational, like the rt files).
                w.seal()  # its catalog record says sealed since its creation
        with e.lock:
            # Index deltas cost more than a checkpoint (~62 B/user) once there are about half as
            # many as users: checkpoint then, so LMDB frees their pages for reuse.
            pending = m.deltas_since_ckpt
            if not e.closed and pending >= max(1_000, len(m.index) // 2):
                e.checkpoint()
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

    # ------------------------------------------------------------------ deleted users
    def _purge_prepare(self) -> frozenset[int]:
        """Before a full pass: rotate the log if it holds a deleted user's records (a flush
        that always starts a new log; the old one is deleted), and stop every writer from
        appending to a file that holds a deleted user's segments, so the pass can rewrite it.
        Returns those files."""
        e = self.engine
        m = e.manifest
        with e.lock:
            purge = m.purge
            if not purge:
                return frozenset()
            if m.wal_id in purge.wals:
                e.flush(rotate=True)
                self.fault("purge:after_rotate")
            sealed: dict[int, FileInfo] = {}
            for w in [*e.writers.values(), self.writer]:
                fid = w.file_id
                if fid is not None and fid in purge.files:
                    info = w.seal()
                    if info is not None:
                        sealed[fid] = info
            files = purge.files
        if sealed:
            drop_dead_files(e, set(), sealed)
        return files

    def _purge_finish(self) -> dict[str, Any]:
        """After a full pass: delete the purged files nothing refers to any more, then publish
        the purge set without the files and logs that are gone."""
        e = self.engine
        m = e.manifest
        dropped = drop_dead_files(e, set(m.purge.files))
        with e.lock:
            purge = m.purge
            left = Purge(frozenset(f for f in purge.files if f in m.catalog),
                         frozenset(w for w in purge.wals if w == m.wal_id))
            if left != purge:
                e.publish(Edit(purge=left))
        self.fault("purge:after_commit")
        return {"purged_files": dropped["files"], "purge_pending_files": len(left.files),
                "purge_pending_logs": len(left.wals)}

    def _merge_users(self, hashes: list[int], cands: set[int], cutoff: int | None,
                     summary: dict[str, Any], stop: threading.Event | None,
                     duty: float) -> None:
        e = self.engine
        m = e.manifest
        batch = max(1, int(self.setting("merge_batch_users")))
        target = max(1, int(self.setting("lifetime_segment_events")))
        level = int(self.setting("zstd_level"))
        for start in range(0, len(hashes), batch):
            if stop is not None and stop.is_set():
                return
            tb = time.perf_counter()
            chunk = hashes[start:start + batch]
            with e.lock:
                e.check_writable()
                schema = m.schema
                snaps = [(h, m.index.extents_of(h)) for h in chunk]
                kinds = {fid: info.kind for fid, info in m.catalog.items()}
            self.fault("merge:after_snapshot")
            results = []
            try:
                # Many small users in one go (seqvault/merge_batch.py); the rest one by one.
                small, snaps = small_users(snaps, kinds, target, cands,
                                           lambda s, sc=schema: self._retains(s, sc, cutoff))
                done = rebuild_small(m.files, self.writer, schema, level, small, summary)
                if done is None:
                    snaps = small + snaps
                else:
                    results.extend(done)
                for h, snap in snaps:
                    if not snap:
                        continue
                    res = self._rebuild(h, snap, schema, kinds, cands, cutoff, summary)
                    if res is not None:
                        results.append(res)
                if not results:
                    continue
                self.fault("merge:after_write")
                self.writer.sync()
                self.fault("merge:after_sync")
                self._publish(results, summary)
            except BaseException:
                self.writer.rollback()
                raise
            self.fault("merge:after_commit")
            if duty < 1.0:
                pause = (time.perf_counter() - tb) * (1.0 - duty) / max(duty, 0.01)
                if stop is not None:
                    stop.wait(pause)
                else:
                    time.sleep(pause)

    @staticmethod
    def _retains(snap: list[Extent], schema: Schema, cutoff: int | None) -> bool:
        """Whether retention drops some of these events (`_rebuild`'s `retain`)."""
        r = schema.retention
        return ((r.max_events is not None and sum(e.count for e in snap) > r.max_events)
                or (cutoff is not None and min(e.min_ts for e in snap) < cutoff))

    # ------------------------------------------------------------------ one user
    def _rebuild(self, h: int, snap: list[Extent], schema: Schema, kinds: dict[int, str],
                 cands: set[int], cutoff: int | None, summary: dict[str, Any]
                 ) -> tuple[int, list[Extent], list[Extent], int, int] | None:
        target = max(1, int(self.setting("lifetime_segment_events")))
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
        got = user_events(self.engine.manifest.files, rewrite, schema, expect_hash=h)
        summary["bytes_read"] += got.bytes_read
        ts_all, colv = got.ts, got.cols
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
        level = int(self.setting("zstd_level"))
        if n:
            by_name = {c.name: colv[c.id] for c in schema.columns}
            bounds = segment_bounds(ts_all, target)  # the same layout as a bulk load
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                if hi <= lo:
                    continue
                blob = encode_user_segment(schema, got.key, ts_all[lo:hi],
                                           {k: a[lo:hi] for k, a in by_name.items()}, level)
                fresh.append(self.writer.append(blob, hi - lo, int(ts_all[lo]),
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
                 summary: dict[str, Any]) -> None:
        """Compare-and-swap: a flush may have prepended real-time extents since the snapshot,
        so a user's new list is [added since] + [new lifetime extents] + [kept]; a user whose
        snapshot part changed in any other way is skipped (the new bytes become garbage)."""
        e = self.engine
        m = e.manifest
        with e.lock:
            if e.closed:
                raise StoreClosed(f"{e.path} was closed during merge")
            final: dict[int, list[Extent]] = {}
            drop_age = drop_count = 0
            orphaned: set[int] = set()
            for h, snap, tail, da, dc in results:
                cur = m.index.extents_of(h)
                k = len(cur) - len(snap)
                if k >= 0 and cur[k:] == snap:
                    final[h] = cur[:k] + tail
                    drop_age += da
                    drop_count += dc
                else:
                    summary["users_skipped"] += 1
                    # The list changed under us: a bulk load, or a delete — then this copy of
                    # the user must not stay on disk either (docs/design/safety.md).
                    orphaned |= {x.file for x in tail}
            purge = None
            if orphaned - m.purge.files:
                purge = Purge(m.purge.files | orphaned, m.purge.wals)
            counters = {k: v for k, v in (("retention_dropped_age", drop_age),
                                          ("retention_dropped_count", drop_count)) if v}
            files: dict[int, FileInfo] = self.writer.pending()
            e.publish(Edit(files=files, users=final, counters=counters, purge=purge),
                      writers=(self.writer,))
        summary["users_merged"] += len(final)
        summary["retention_dropped"]["max_age"] += drop_age
        summary["retention_dropped"]["max_events"] += drop_count

    # ------------------------------------------------------------------ backpressure
    def backlog(self) -> int:
        """Flushes whose real-time segments no completed pass has merged yet."""
        return max(0, self.engine.flush_count - self.merged_through_flush)


def merge_stats(engine: Engine, merger: Merger | None, live: int) -> dict[str, Any]:
    """What `stats()` shows about merge, retention and reclamation. holds: the store lock."""
    m = engine.manifest
    c = m.counters()
    age, count = c["retention_dropped_age"], c["retention_dropped_count"]
    out: dict[str, Any] = {"retention_dropped_events": age + count,
                           "retention_dropped_by_age": age, "retention_dropped_by_count": count,
                           "deleted_users": c["deleted_users"],
                           "deleted_events": c["deleted_events"]}
    data = sum(info.size for info in m.catalog.values())
    out["live_bytes"] = live
    out["garbage_bytes"] = max(0, data - live)
    out.update(merger.totals if merger is not None else {
        "merge_passes": 0, "merged_users": 0, "merged_events": 0, "merge_bytes_written": 0,
        "merge_skipped_users": 0, "reclaimed_files": 0, "reclaimed_bytes": 0})
    out["merge_backlog_flushes"] = merger.backlog() if merger is not None else 0
    return out
