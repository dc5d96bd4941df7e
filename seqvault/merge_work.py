"""The heavy part of a merge batch as one self-contained job: read and verify the extents to
rewrite, merge them by timestamp, apply retention, encode the lifetime segments, append them
to the merger's output file and fsync it (docs/design/merge.md, steps 3–4).

A `MergeJob` carries everything it needs by value (paths, the schema as JSON, the users'
extent snapshots), so the same `run_job` runs in a thread of the writer (`merge_worker =
"thread"`) or in the merge process (`merge_proc`, `merge_worker = "process"`) and gives
byte-identical output. It never touches LMDB or the index: publishing is the writer's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import iofaults
from .errors import CorruptionError
from .files import ExtentFiles, FileAppender
from .index import Extent, user_hash
from .layout import segment_bounds
from .merge_batch import build_small, retains, small_users
from .reads import user_events
from .schema import Schema
from .segment_writer import encode_user_segment
from .settings import MAX_FILE_BYTES
from .wal import fsync_dir

Fault = Callable[[str], None]
COUNTERS = ("segments_in", "segments_out", "events_in", "events_out", "bytes_read",
            "bytes_written")


@dataclass
class MergeJob:
    """One batch of users to rebuild into the output file `out_name` (id `out_id`), whose
    first `out_size` bytes are already there (published, or written by an earlier job of the
    same batch). `kinds`: every catalog file's kind (source extents are opened by name)."""

    data_dir: str
    schema_json: str
    users: list[tuple[int, list[Extent]]]  # (user hash, extent list newest first)
    kinds: dict[int, str]
    cands: frozenset[int]  # files being reclaimed: nothing in them is kept
    cutoff: int | None  # max_age cutoff (None: no age retention)
    target: int  # lifetime_segment_events
    level: int  # zstd_level
    out_id: int
    out_name: str
    out_size: int
    limit: int  # max_file_bytes: a user whose segments do not fit starts the next file
    new_file: bool  # the output file is new since the last publish: fsync the directory
    # The index's alias table (key bytes → slot hash) at the snapshot: a colliding user's
    # slot is not `user_hash(key)` (docs/format/index.md, "Slot hashes"), and the segments'
    # keys are checked against the slot they were found under.
    aliases: dict[bytes, int] = field(default_factory=dict)

    def slot_of(self, kb: bytes) -> int:
        """`HashIndex.slot_of` as of the snapshot."""
        if self.aliases:
            a = self.aliases.get(kb)
            if a is not None:
                return a
        return user_hash(kb)


@dataclass
class Rebuilt:
    """A user's replacement for its snapshot: `tail` (newest first) = new lifetime extents,
    then the kept ones."""

    h: int
    tail: list[Extent]
    dropped_age: int
    dropped_count: int


@dataclass
class JobResult:
    rebuilt: list[Rebuilt]
    done: int  # users of the job handled (the rest did not fit in the output file)
    out_size: int
    counters: dict[str, int] = field(default_factory=dict)
    fsyncs: int = 0


def run_job(job: MergeJob, files: ExtentFiles | None, fault: Fault,
            prefix: str = "merge:") -> JobResult:
    """Rebuild the job's users in order, appending to the output file; stop before a user
    whose segments would push a non-empty file past `limit` (`done` says where). Fault points
    `{prefix}after_write` and `{prefix}after_sync`. `files`: the caller's open extent files
    (the writer's, in a thread), or None to open them here (the merge process)."""
    schema = Schema.from_json(job.schema_json)
    own = files is None
    if files is None:
        files = ExtentFiles(Path(job.data_dir))
        for fid, kind in job.kinds.items():
            files.register(fid, kind)
    counters = dict.fromkeys(COUNTERS, 0)
    rebuilt: list[Rebuilt] = []
    path = Path(job.data_dir) / job.out_name
    app: FileAppender | None = None
    done = 0
    try:
        pre = _small_builds(job, files, schema)
        for h, snap in job.users:
            res = pre.get(h) or rebuild_user(job, files, schema, h, snap)
            if res is None:
                done += 1
                continue
            need = sum(len(b) for b in res.blobs)
            if app is None:
                app = open_output(path, job.out_size)
            if app.size > 0 and app.size + need > job.limit:
                break  # the caller rolls to a new file and sends the rest
            if app.size + need > MAX_FILE_BYTES:
                raise CorruptionError(f"{path}: {need} more bytes would pass the 32-bit extent "
                                      f"offset limit ({MAX_FILE_BYTES})", path=str(path))
            fresh = []
            for blob, (cnt, lo_ts, hi_ts) in zip(res.blobs, res.meta):
                off = app.append(blob)
                fresh.append(Extent(job.out_id, off, len(blob), cnt, lo_ts, hi_ts))
            rebuilt.append(Rebuilt(h, list(reversed(fresh)) + res.kept, res.dropped_age,
                                   res.dropped_count))
            counters["segments_in"] += len(snap) - len(res.kept)
            counters["segments_out"] += len(res.blobs)
            counters["events_in"] += res.events_in
            counters["events_out"] += res.events_out
            counters["bytes_read"] += res.bytes_read
            counters["bytes_written"] += need
            done += 1
        fsyncs = 0
        size = app.size if app is not None else job.out_size
        if rebuilt:
            assert app is not None
            fault(prefix + "after_write")
            app.sync()
            fsyncs += 1
            if job.new_file:
                fsync_dir(Path(job.data_dir))
                fsyncs += 1
            fault(prefix + "after_sync")
        return JobResult(rebuilt, done, size, counters, fsyncs)
    finally:
        if app is not None:
            app.close()
        if own:
            files.close()


def _small_builds(job: MergeJob, files: ExtentFiles, schema: Schema) -> dict[int, UserBuild]:
    """The job's small users (one segment's worth, nothing kept, nothing for retention to
    drop) decoded, sorted and encoded all at once (seqvault/merge_batch.py); the others, or
    all of them when the batch path declines, go through `rebuild_user` one by one."""
    small, _rest = small_users(job.users, job.kinds, max(1, job.target), set(job.cands),
                               lambda snap: retains(snap, schema, job.cutoff))
    if len(small) < 2:
        return {}
    built = build_small(files, schema, job.level, small, job.aliases)
    if built is None:
        return {}
    return {h: UserBuild([b.blob], [(b.count, b.min_ts, b.max_ts)], [], 0, 0, b.count,
                         b.count, b.bytes_read) for h, b in built.items()}


def open_output(path: Path, size: int) -> FileAppender:
    """The output file, holding exactly `size` bytes: more are an unpublished tail (a job that
    failed before) and are cut; fewer means published bytes went missing."""
    app = FileAppender(path, 0, "lt")
    if app.size > size:
        iofaults.ftruncate(app.fd, size)
        app.size = size
    elif app.size < size:
        have = app.size
        app.close()
        raise CorruptionError(f"{path}: merge output file has {have} bytes, {size} expected "
                              "(published bytes are missing)", path=str(path))
    return app


@dataclass
class UserBuild:
    """A user's new segments (encoded, oldest first) and what is kept (newest first)."""

    blobs: list[bytes | memoryview]
    meta: list[tuple[int, int, int]]  # (count, min_ts, max_ts) of each blob
    kept: list[Extent]
    dropped_age: int
    dropped_count: int
    events_in: int
    events_out: int
    bytes_read: int


def rebuild_user(job: MergeJob, files: ExtentFiles, schema: Schema, h: int,
                 snap: list[Extent]) -> UserBuild | None:
    """One user's new segments, or None when it has nothing to rewrite."""
    if not snap:
        return None
    target = max(1, job.target)
    kinds, cands, cutoff = job.kinds, job.cands, job.cutoff
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
    got = user_events(files, rewrite, schema, expect_hash=h, slot_of=job.slot_of)
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
    blobs: list[bytes | memoryview] = []
    meta: list[tuple[int, int, int]] = []
    if n:
        by_name = {c.name: colv[c.id] for c in schema.columns}
        bounds = segment_bounds(ts_all, target)  # the same layout as a bulk load
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi <= lo:
                continue
            blobs.append(encode_user_segment(schema, got.key, ts_all[lo:hi],
                                             {k: a[lo:hi] for k, a in by_name.items()},
                                             job.level))
            meta.append((hi - lo, int(ts_all[lo]), int(ts_all[hi - 1])))
    return UserBuild(blobs, meta, list(reversed(kept)), dropped_age, dropped_count, n_in, n,
                     got.bytes_read)
