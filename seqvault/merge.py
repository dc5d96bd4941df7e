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
Steps 2–3 are a self-contained job (`merge_work.run_job`) that runs in a thread of the
writer or in the merge process (`merge_proc`, setting `merge_worker`), never holding the
writer's GIL in the latter case.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from . import merge_move
from .engine import Engine
from .errors import MergeFailed, StoreClosed
from .faults import Faults
from .files import file_name
from .index import Extent
from .layout import RECENT_SEGMENT_EVENTS, expected_segments
from .manifest import Edit, FileInfo, Manifest, Purge
from .merge_proc import MergeProcess, MergeStopped
from .merge_work import COUNTERS, JobResult, MergeJob, Rebuilt, run_job
from .reclaim import drop_dead_files, extent_map, live_bytes, seal_writers
from .schema import retention_cutoff
from .segment import key_bytes
from .validate import coerce_user

Progress = Callable[[str, int, int], None]
WORKERS = ("process", "thread")


def lower_thread_priority(nice: int) -> None:
    """Raise this thread's niceness by `nice` (Linux: per thread; elsewhere a no-op)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError:
        pass


class MergeOutput:
    """The merger's private lifetime files: the one being written, its size, and what was
    published. No file descriptor: a merge job (in a thread or in the merge process) opens the
    file by name. Each file is `sealed: true` in the catalog from its creation, so the store's
    own writers never append to it after a reopen. holds: the merge mutex; `target`, `roll`,
    `wrote`, `seal` and `rollback` also the store lock (they change the in-memory catalog)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.file_id: int | None = None
        self.size = 0
        self.published: dict[int, int] = {}  # file id -> size at the last publish
        self.rolled: dict[int, int] = {}  # full files written since the last publish -> size
        self.created: set[int] = set()  # files created since the last publish
        self.new_dir_entry = False

    def path(self, fid: int) -> os.PathLike[str]:
        return self.manifest.files.dir / file_name("lt", fid)

    def target(self) -> tuple[int, str, int, bool]:
        """(file id, file name, size, new since the last directory fsync) to append to."""
        if self.file_id is None:
            fid = self.manifest.new_file_id("lt", sealed=True)
            self.file_id, self.size = fid, 0
            self.published[fid] = 0
            self.created.add(fid)
            self.new_dir_entry = True
        return self.file_id, file_name("lt", self.file_id), self.size, self.new_dir_entry

    def wrote(self, res: JobResult) -> None:
        self.size = res.out_size
        if res.rebuilt:
            self.new_dir_entry = False  # the job fsynced the directory
        elif self.size == 0 and self.file_id in self.created:
            self._forget(self.file_id)  # nothing written: no empty file left behind

    def wrote_size(self, size: int) -> None:
        """A move (merge_move.py) appended and fsynced the current file up to `size`, and
        fsynced the directory."""
        self.size = size
        self.new_dir_entry = False

    def roll(self) -> None:
        """The current file is full: the next job starts a new one."""
        if self.file_id is not None:
            self.rolled[self.file_id] = self.size
        self.file_id, self.size = None, 0

    def pending(self) -> dict[int, FileInfo]:
        """Catalog records for the files grown since the last publish."""
        out: dict[int, FileInfo] = {}
        cur = {self.file_id: self.size} if self.file_id is not None else {}
        for fid, size in {**self.rolled, **cur}.items():
            if size != self.published.get(fid, -1) or fid in self.rolled:
                info = self.manifest.catalog[fid]
                out[fid] = FileInfo("lt", size, info.created_ns, sealed=True)
        return out

    def published_now(self) -> None:
        self.rolled.clear()
        self.created.clear()
        self.published = {self.file_id: self.size} if self.file_id is not None else {}

    def rollback(self) -> None:
        """Cut everything written since the last publish; delete files created since."""
        cur = {self.file_id: self.size} if self.file_id is not None else {}
        for fid in {**self.rolled, **cur}:
            if fid in self.created:
                self._forget(fid)
                continue
            before = self.published.get(fid, 0)
            try:
                if os.stat(self.path(fid)).st_size > before:
                    os.truncate(self.path(fid), before)
            except FileNotFoundError:
                pass
        if self.file_id is not None:
            self.size = self.published.get(self.file_id, 0)
        self.rolled.clear()
        self.created.clear()

    def _forget(self, fid: int) -> None:
        try:
            os.unlink(self.path(fid))
        except FileNotFoundError:
            pass
        self.manifest.forget_file(fid)
        self.published.pop(fid, None)
        self.created.discard(fid)
        if fid == self.file_id:
            self.file_id, self.size = None, 0

    def seal(self) -> FileInfo | None:
        """Stop appending to the current file (its bytes were fsynced by each job)."""
        fid = self.file_id
        if fid is None:
            return None
        size = self.size
        self.file_id, self.size = None, 0
        self.published.pop(fid, None)
        return FileInfo("lt", size, self.manifest.catalog[fid].created_ns, sealed=True)


class Merger:
    """One per writer. Serialises merges (`mutex`), owns the private lifetime files
    (`MergeOutput`) and, with `merge_worker = "process"`, the merge process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.mutex = threading.Lock()
        self.out = MergeOutput(engine.manifest)
        self.proc: MergeProcess | None = None
        self.fault = Faults()
        # Real-time segments left by an earlier writer count as one unmerged flush, so that a
        # background merger started on such a store merges them without waiting for a flush.
        rt = any(i.kind == "rt" and i.size > 0 for i in engine.manifest.catalog.values())
        self.merged_through_flush = engine.flush_count - (1 if rt else 0)
        self.totals: dict[str, int] = {"merge_passes": 0, "merged_users": 0,
                                       "merged_events": 0, "merge_bytes_written": 0,
                                       "merge_skipped_users": 0, "reclaimed_files": 0,
                                       "reclaimed_bytes": 0, "merge_process_starts": 0,
                                       "merge_process_failures": 0}
        self.last_failure: str | None = None
        self.progress = threading.Condition()

    def setting(self, name: str) -> Any:
        return self.engine.manifest.settings[name]

    def active_files(self) -> set[int]:
        fid = self.out.file_id
        return {fid} if fid is not None else set()

    def close(self) -> None:
        """Stop the merge process (if any); the merge output needs no closing."""
        if self.proc is not None:
            self.proc.close()
            self.proc = None

    def process_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

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
                    row = idx.find(idx.slot_of(key_bytes(coerce_user(schema, u))[1]))
                    if row >= 0:
                        want[row] = True
                # an explicit request also compacts users with more than one extent
                nseg = np.bincount(emap.owners, minlength=n)[:n]
                need = want & (need | (nseg > 1))
            need |= in_cands  # reclamation is about files: their users, whoever was asked for
            rows = np.nonzero(need)[0]
            hashes = idx.u_hash[rows].tolist()  # Python ints, in one C pass
        return hashes, cands, cutoff

    # ------------------------------------------------------------------ the pass
    def run(self, users: Iterable[Any] | None = None, *, reclaim: bool = True,
            stop: threading.Event | None = None, duty: float = 1.0,
            reclaim_ratio: float | None = None, nice: int = 0, worker: str = "thread",
            progress: Progress | None = None) -> dict[str, Any]:
        """One merge pass (see `SeqVault.merge`). `worker`: where each batch's heavy part runs,
        "thread" (this process; with `nice` > 0 a worker thread at that niceness, the caller
        waits) or "process" (the merge process, at niceness `nice`; this thread only plans and
        publishes). `duty` < 1 sleeps after each batch (the background pace). `progress(phase,
        done, total)` is called after every batch: phase "merge" (users of the pass), then
        "reclaim" (users of files sealed for reclamation), when that second round runs."""
        if worker not in WORKERS:
            raise ValueError(f"merge worker {worker!r} is not one of {list(WORKERS)}")
        ratio = float(reclaim_ratio if reclaim_ratio is not None
                      else self.setting("reclaim_ratio"))
        kw: dict[str, Any] = {"reclaim": reclaim, "stop": stop, "duty": duty, "ratio": ratio,
                              "nice": nice, "worker": worker, "progress": progress}
        if worker == "process" or nice <= 0:
            with self.mutex:
                try:
                    return self._run(users, **kw)
                except BaseException as exc:  # a failed write, fsync or unlink: fail-stop
                    self.engine.fail_stop(exc)
                    raise
        result: dict[str, Any] = {}
        failure: list[BaseException] = []

        def work() -> None:
            lower_thread_priority(nice)
            try:
                with self.mutex:
                    result.update(self._run(users, **kw))
            except BaseException as exc:  # re-raised in the caller
                self.engine.fail_stop(exc)  # a failed write, fsync or unlink: fail-stop
                failure.append(exc)

        t = threading.Thread(target=work, name="seqvault-merge-pass")
        t.start()
        t.join()
        if failure:
            raise failure[0]
        return result

    def _run(self, users: Iterable[Any] | None, *, reclaim: bool, stop: threading.Event | None,
             duty: float, ratio: float, nice: int, worker: str,
             progress: Progress | None) -> dict[str, Any]:
        e = self.engine
        m = e.manifest
        e.check_writable()
        t0 = time.perf_counter()
        flushes_at_start = e.flush_count
        summary: dict[str, Any] = {
            "users_considered": 0, "users_merged": 0, "users_skipped": 0, "segments_in": 0,
            "segments_out": 0, "events_in": 0, "events_out": 0, "bytes_read": 0,
            "bytes_written": 0, "retention_dropped": {"max_age": 0, "max_events": 0},
            "files_reclaimed": 0, "bytes_reclaimed": 0, "files_sealed": 0, "batches": 0,
            "fsyncs": 0, "worker": worker,
        }
        ctl = _Pass(stop, duty, nice, worker, progress)
        user_list = list(users) if users is not None else None
        only: set[int] | None = None
        # Deleted users' bytes (docs/design/safety.md, "Deleting a user"): every pass — also
        # merge(users=...) — rotates the log that holds their records and rewrites the files
        # that held their segments, whoever was asked for.
        purge = self._purge_prepare()
        start_file, start_size = self.out.file_id, self.out.size
        for rnd in range(2):
            hashes, cands, cutoff = self._plan(user_list, reclaim, ratio, only,
                                               purge if only is None else frozenset())
            summary["users_considered"] += len(hashes)
            ctl.phase = "merge" if rnd == 0 else "reclaim"
            self._merge_users(hashes, cands, cutoff, summary, ctl)
            if ctl.stopped():
                break
            if not reclaim:
                break
            with e.lock:
                live = live_bytes(m.index)
                sealed = seal_writers(e, live, ratio)
                w = self.out
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
        if (purge or m.purge) and not ctl.stopped():
            summary.update(self._purge_finish())
        w = self.out
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
        if not ctl.stopped() and user_list is None:
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
        """Before a pass: rotate the log if it holds a deleted user's records (a flush
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
            appenders: list[Any] = [*e.writers.values(), self.out]
            for w in appenders:
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
        """After a pass: delete the purged files nothing refers to any more, then publish
        the purge set without the files and logs that are gone."""
        e = self.engine
        m = e.manifest
        dropped = drop_dead_files(e, set(m.purge.files))
        with e.lock:
            e.wait_flush()
            purge = m.purge
            left = Purge(frozenset(f for f in purge.files if f in m.catalog),
                         frozenset(w for w in purge.wals if w == m.wal_id))
            if left != purge:
                e.publish(Edit(purge=left))
        self.fault("purge:after_commit")
        return {"purged_files": dropped["files"], "purge_pending_files": len(left.files),
                "purge_pending_logs": len(left.wals)}

    # ------------------------------------------------------------------ batches
    def _merge_users(self, hashes: list[int], cands: set[int], cutoff: int | None,
                     summary: dict[str, Any], ctl: _Pass) -> None:
        e = self.engine
        m = e.manifest
        batch = max(1, int(self.setting("merge_batch_users")))
        # Users already in lifetime layout are moved by arrays, many per commit (merge_move.py);
        # the per-user path below takes the rest, and any the bulk decode declined.
        with e.lock:
            arr = np.array(hashes, dtype=np.uint64)
            move = merge_move.movers(m.index, m.schema, arr, cutoff,
                                     int(self.setting("lifetime_segment_events")))
        if move.any() and not ctl.stopped():
            try:
                back = merge_move.move_users(self, arr[move], summary)
            except BaseException:
                with e.lock:
                    self.out.rollback()
                raise
            hashes = [int(h) for h in arr[~move]] + back
            moved = int(move.sum()) - len(back)
            if ctl.progress is not None:
                ctl.progress(ctl.phase, moved, moved + len(hashes))
        total = len(hashes)
        if total and ctl.worker == "process":
            # Started (its imports done) before the first batch's clock runs, so that the pace
            # (merge_duty) is not charged with the start-up.
            self._process(ctl.nice).ensure_started()
        for start in range(0, total, batch):
            if ctl.stopped():
                return
            tb = time.perf_counter()
            chunk = hashes[start:start + batch]
            with e.lock:
                e.check_writable()
                schema_json = m.schema.to_json()
                snaps = [(h, m.index.extents_of(h)) for h in chunk]
                kinds = {fid: info.kind for fid, info in m.catalog.items()}
                # Colliding users of the batch at their alternate slots, as of the snapshot
                # (the job checks each segment's key against the slot it was found under).
                slots = m.index.alias_slots
                aliases = ({slots[h]: h for h in chunk if h in slots} if slots else {})
            self.fault("merge:after_snapshot")
            snaps = [(h, snap) for h, snap in snaps if snap]
            try:
                rebuilt = self._build(snaps, schema_json, kinds, cands, cutoff, summary, ctl,
                                      aliases)
                if rebuilt:
                    if ctl.worker == "process":
                        # The same state as the thread's own after_sync point: the batch is
                        # written and fsynced by the merge process, nothing published.
                        self.fault("merge:after_sync")
                    self._publish(dict(snaps), rebuilt, summary)
            except MergeStopped:
                with e.lock:
                    self.out.rollback()
                return
            except BaseException:
                with e.lock:
                    self.out.rollback()
                raise
            summary["batches"] += 1
            if rebuilt:
                self.fault("merge:after_commit")
            if ctl.progress is not None:
                ctl.progress(ctl.phase, min(start + batch, total), total)
            if ctl.duty < 1.0:
                pause = (time.perf_counter() - tb) * (1.0 - ctl.duty) / max(ctl.duty, 0.01)
                if ctl.stop is not None:
                    ctl.stop.wait(pause)
                else:
                    time.sleep(pause)

    def _build(self, snaps: list[tuple[int, list[Extent]]], schema_json: str,
               kinds: dict[int, str], cands: set[int], cutoff: int | None,
               summary: dict[str, Any], ctl: _Pass,
               aliases: dict[bytes, int] | None = None) -> list[Rebuilt]:
        """Run the batch as one or more jobs (a new output file when one is full)."""
        e = self.engine
        m = e.manifest
        rebuilt: list[Rebuilt] = []
        todo = snaps
        while todo:
            with e.lock:
                fid, name, size, new = self.out.target()
                job = MergeJob(str(m.files.dir), schema_json, todo, kinds, frozenset(cands),
                               cutoff, int(self.setting("lifetime_segment_events")),
                               int(self.setting("zstd_level")), fid, name, size,
                               int(self.setting("max_file_bytes")), new,
                               dict(aliases or {}))
            if ctl.worker == "process":
                res = self._process(ctl.nice).run(job, ctl.stop, self.fault)
            else:
                res = run_job(job, m.files, self.fault)
            with e.lock:
                self.out.wrote(res)
                if res.done < len(todo):
                    self.out.roll()
            rebuilt += res.rebuilt
            for k in COUNTERS:
                summary[k] += res.counters.get(k, 0)
            summary["fsyncs"] += res.fsyncs
            todo = todo[res.done:]
        return rebuilt

    def _process(self, nice: int) -> MergeProcess:
        """The merge process, (re)started at niceness `nice` (niceness only ever goes up in a
        process, so a different one needs a new process)."""
        p = self.proc
        if p is not None and p.nice != nice:
            p.close()
            p = self.proc = None
        if p is None:
            p = self.proc = MergeProcess(str(self.engine.path), nice)
        if p.pid is None:
            self.totals["merge_process_starts"] += 1
        return p

    # ------------------------------------------------------------------ publish
    def _publish(self, snaps: dict[int, list[Extent]], rebuilt: list[Rebuilt],
                 summary: dict[str, Any]) -> None:
        """Compare-and-swap: a flush may have prepended real-time extents since the snapshot,
        so a user's new list is [added since] + [new lifetime extents] + [kept]; a user whose
        snapshot part changed in any other way is skipped (the new bytes become garbage)."""
        e = self.engine
        m = e.manifest
        with e.lock:
            if e.closed:
                raise StoreClosed(f"{e.path} was closed during merge")
            # A background flush computes its lists against the index as it is: the compare
            # below runs after its commit, never between its snapshot and its commit.
            e.wait_flush()
            for fid, info in self.out.pending().items():
                try:
                    have = os.stat(self.out.path(fid)).st_size
                except FileNotFoundError:
                    have = -1
                if have < info.size:  # never publish offsets the file does not hold
                    raise MergeFailed(f"{self.out.path(fid)}: the merge wrote {info.size} "
                                      f"bytes, the file has {have}")
            final: dict[int, list[Extent]] = {}
            drop_age = drop_count = 0
            orphaned: set[int] = set()
            for r in rebuilt:
                snap = snaps[r.h]
                cur = m.index.extents_of(r.h)
                k = len(cur) - len(snap)
                if k >= 0 and cur[k:] == snap:
                    final[r.h] = cur[:k] + r.tail
                    drop_age += r.dropped_age
                    drop_count += r.dropped_count
                else:
                    summary["users_skipped"] += 1
                    # The list changed under us: a bulk load, or a delete — then this copy of
                    # the user must not stay on disk either (docs/design/safety.md).
                    orphaned |= {x.file for x in r.tail}
            purge = None
            if orphaned - m.purge.files:
                purge = Purge(m.purge.files | orphaned, m.purge.wals)
            counters = {k: v for k, v in (("retention_dropped_age", drop_age),
                                          ("retention_dropped_count", drop_count)) if v}
            # writers=: a commit that is durable although it raised still marks the output
            # published, so the rollback that follows cuts nothing the catalog refers to.
            e.publish(Edit(files=self.out.pending(), users=final, counters=counters,
                           purge=purge), writers=(self.out,))
        summary["users_merged"] += len(final)
        summary["retention_dropped"]["max_age"] += drop_age
        summary["retention_dropped"]["max_events"] += drop_count

    # ------------------------------------------------------------------ backpressure
    def backlog(self) -> int:
        """Flushes whose real-time segments no completed pass has merged yet."""
        return max(0, self.engine.flush_count - self.merged_through_flush)


class _Pass:
    """How one pass runs: its stop event, pace, niceness, worker and progress callback."""

    def __init__(self, stop: threading.Event | None, duty: float, nice: int, worker: str,
                 progress: Progress | None) -> None:
        self.stop, self.duty, self.nice, self.worker = stop, duty, nice, worker
        self.progress = progress
        self.phase = "merge"

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()


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
        "merge_skipped_users": 0, "reclaimed_files": 0, "reclaimed_bytes": 0,
        "merge_process_starts": 0, "merge_process_failures": 0})
    out["merge_worker"] = m.settings["merge_worker"]
    out["merge_process_pid"] = merger.process_pid() if merger is not None else None
    out["merge_process_last_failure"] = merger.last_failure if merger is not None else None
    out["merge_backlog_flushes"] = merger.backlog() if merger is not None else 0
    return out
