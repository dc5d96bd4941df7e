"""SeqVault: the store's front — open, append, flush, read, merge, stats, close.

A thin layer over the engine's rooms (docs/design/architecture.md has the map): the published
state and its one commit path (`manifest`), segment writers (`segment_writer`), opening and
recovery (`recovery`), the read path (`reads`), lifetime merge (`merge`, `background`,
`reclaim`), bulk loads (`bulk`). `SeqVault` meets the `engine.Engine` protocol, the only thing
those modules see of it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import gcpause, reads, sealing
from . import prepare as prepare_mod
from . import settings as settings_mod
from . import wal as wal_mod
from .background import BackgroundMerger
from .bulk import BulkWriter
from .engine import Published
from .errors import (
    CorruptionError,
    NotFound,
    ReadOnlyError,
    SchemaError,
    StoreClosed,
    ValidationError,
    WriterFailed,
)
from .faults import Faults
from .files import ExtentFiles
from .index import Extent, HashIndex
from .layout import segment_bounds
from .manifest import Edit, FileInfo, Manifest, Purge
from .memtable import JoinedTail, MemTable, StringDict, add_events
from .merge import Merger, merge_stats
from .meta import Meta
from .prepare import call_spec, prepare
from .reads import (
    ForeignSegment,
    UserSequence,
    plain_newest,
    plan_read,
    read_sources,
    sources_of,
    user_events,
)
from .reclaim import live_bytes
from .recovery import (
    create_store,
    log_report,
    missing_log,
    recover_log,
    repair,
    replay_log,
    save_damaged_log,
    take_lock,
)
from .retained import Retained, retained_counts
from .ring import ring_path
from .schema import MAX_STRING_CARDINALITY, Schema, retention_cutoff
from .segcache import SegmentCache
from .segment import (
    TIME_COLUMN_ID,
    decode_columns,
    header_size,
    key_bytes,
    key_from_bytes,
    parse_header,
    read_key,
)
from .segment_writer import SegmentWriter, encode_user_segment
from .validate import coerce_user, validate_append, validate_batch
from .verify import verify_store

__all__ = ["SeqVault", "UserSequence"]


def io_failure(exc: BaseException) -> bool:
    """A failed write, fsync or metadata commit (LMDB raises its own classes)."""
    return isinstance(exc, OSError | WriterFailed) or type(exc).__module__ == "lmdb"


HEAD_PROBE = 512  # bytes read to list a user's key: the header of a segment of a few columns


class SeqVault:
    """A store directory. Use `SeqVault.open(path, ...)`; also a context manager."""

    # ================================================================== open
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        schema: Schema | str | os.PathLike[str] | None = None,
        *,
        durability: str | None = None,
        read_only: bool = False,
        create: bool = True,
        **settings: Any,
    ) -> SeqVault:
        """Open (or create) the store at `path`.

        `schema` is needed to create a store; on an existing store it may add columns with
        defaults or change retention (an online change), anything else is refused. Settings
        given here are validated (seqvault/settings.py has each one's range) before anything
        is created, then persisted with the store and kept on reopen.
        """
        if durability is not None:
            settings["durability"] = durability
        auto_merge = bool(settings.pop("auto_merge", False))
        given = settings_mod.validate(settings)
        if isinstance(schema, str | os.PathLike):
            schema = Schema.load(schema)
        return cls(Path(path), schema, read_only=read_only, create=create, settings=given,
                   auto_merge=auto_merge)

    def __init__(self, path: Path, schema: Schema | None, *, read_only: bool, create: bool,
                 settings: dict[str, Any], auto_merge: bool = False,
                 salvage: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self.lock = threading.RLock()
        self.mem = MemTable()
        # A background flush (docs/design/realtime.md, "Background flush"): the memtable it
        # seals, still read until its commit, and its thread; `_flushed` wakes those waiting
        # for the commit. While one is in flight nothing else changes users' extent lists.
        self.frozen: MemTable | None = None
        self._flush_thread: threading.Thread | None = None
        self._flushed = threading.Condition(self.lock)
        self.writers: dict[str, SegmentWriter] = {}
        self.wal: wal_mod.WalWriter | None = None
        self.wal_pos = 0  # read-only opens: how far the log was replayed (0: not yet)
        # and there, the next record's seq and the events before it, when known: what a
        # record staged in the writer's ring must continue (docs/format/ring.md, G4)
        self._wal_at: wal_mod.LogPosition | None = None
        # Acknowledged log records found missing or damaged (read-only opens serve the rest;
        # docs/format/wal.md, "Recovery"), as dicts for stats() and the command line.
        self.log_damage: list[dict[str, Any]] = []
        self._salvage = salvage
        self._closed = False
        self._lock_fd: int | None = None
        self._last_refresh = 0.0
        self._merger: Merger | None = None
        self._bg_merge: BackgroundMerger | None = None
        self._live_cache: tuple[int, int, int] | None = None  # (seq, ckpt count, live bytes)
        self._fault = Faults()  # crash-test kill points (seqvault/faults.py)
        self._failed: BaseException | None = None  # fail-stop after a failed write or fsync
        self._counters = {"appends": 0, "appended_events": 0, "flushes": 0, "tail_seals": 0,
                          "tail_sealed_events": 0, "reads": 0, "recovered_events": 0,
                          "torn_tail_bytes": 0}
        exists = Manifest.exists(path)
        if not exists:
            if read_only or not create:
                raise NotFound(f"{path} is not a SeqVault store (no {path / 'meta'}); create it "
                               "with SeqVault.open(path, schema=...) or `seqvault init`")
            if schema is None:
                raise SchemaError(f"{path} does not exist yet: a schema is needed to create it "
                                  "(SeqVault.open(path, schema=Schema.load(...)))")
        try:
            if read_only:
                self._open_reader(settings)
                return
            path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = take_lock(path)
            if not exists:
                assert schema is not None
                create_store(path, schema, settings)
            self._open_writer(settings)
            if exists and schema is not None:
                self.evolve_schema(schema)
            if auto_merge:
                self._bg_merge = BackgroundMerger(self, self._get_merger())
                self._bg_merge.start()
        except BaseException:
            self._release()
            raise

    def _attach_read_cache(self) -> None:
        """Decoded segments for this process's reads (seqvault/segcache.py)."""
        size = int(self.manifest.settings["read_cache_bytes"])
        self.manifest.files.cache = SegmentCache(size) if size > 0 else None

    def _open_writer(self, given: dict[str, Any]) -> None:
        m = self.manifest = Manifest(self.path, read_only=False, given=given)
        m.load()
        self._attach_read_cache()
        changed = {k: v for k, v in given.items()
                   if m.stored_settings.get(k, settings_mod.DEFAULTS[k]) != v}
        if changed:
            m.commit(Edit(settings=changed))
        repair(self.path, m)
        found = recover_log(self.path, m.wal_id, m.schema, self.mem, m.dicts, m.sealed,
                            flushed=m.flushed, synced=m.synced_of(m.wal_id), salvage=self._salvage)
        self.recovered = found
        self.log_damage = [p.to_dict() for p in found.problems]
        self.wal_pos = found.position.end
        self._counters["recovered_events"] = found.events
        self._counters["torn_tail_bytes"] = found.torn
        self.writers = {"rt": SegmentWriter(m, "rt", on_error=self.fail_stop, lock=self.lock),
                        "lt": SegmentWriter(m, "lt", on_error=self.fail_stop, lock=self.lock)}
        if found.version == 1 or found.problems:
            # A version-1 log is not appended to: its records move into segments and a
            # version-2 log starts (docs/format/wal.md, "Versioning"). A damaged log (salvage)
            # is left for `repair_log` to replace.
            if found.version == 1 and not found.problems:
                old = self.path / "wal" / wal_mod.wal_name(m.wal_id)
                self.flush(rotate=True)
                old.unlink(missing_ok=True)
        else:
            self.wal = wal_mod.WalWriter(self.path / "wal" / wal_mod.wal_name(m.wal_id),
                                         m.settings["durability"],
                                         batch_interval=m.settings["batch_interval"],
                                         at=found.position)
        if m.needs_migration():  # a format-1 store: its checkpoint moves to a file now
            with self.lock:
                m.checkpoint()

    @classmethod
    def repair_log(cls, path: str | os.PathLike[str], *, dry_run: bool = False
                   ) -> dict[str, Any]:
        """`seqvault repair`: salvage every good record of a damaged log (also those after the
        damage) and report what was dropped. Explicit, never automatic. The good records are
        replayed (skipping sealed-through events as always), sealed into segments by a flush
        that starts a new log, and published in one commit; a copy of the damaged log is kept
        in `lost/`. `dry_run`: the report only (a read-only open)."""
        root = Path(path)
        if dry_run:
            with cls.open(root, read_only=True) as v:
                return {**log_report(root, v.manifest), "repaired": False}
        v = cls(root, None, read_only=False, create=False, settings={}, salvage=True)
        try:
            report = {**log_report(root, v.manifest), "repaired": False}
            if v.log_damage:
                saved = save_damaged_log(root, v.wal_id)
                report["saved_copy"] = str(saved) if saved is not None else None
                old = root / "wal" / wal_mod.wal_name(v.wal_id)
                v.flush(rotate=True)  # the commit switches to a new log: the damaged one is moot
                old.unlink(missing_ok=True)
                report["repaired"] = True
                report["new_log"] = str(root / "wal" / wal_mod.wal_name(v.wal_id))
        finally:
            v.close()
        return report

    def _open_reader(self, given: dict[str, Any]) -> None:
        self.manifest = Manifest(self.path, read_only=True, given=given)
        for attempt in range(20):
            try:
                self.manifest.load()
                self._replay_from_start()
                break
            except FileNotFoundError:  # the writer rotated the log or replaced the checkpoint
                time.sleep(0.001 * (attempt + 1))
        else:
            raise CorruptionError(f"{self.path}: could not get a consistent view after 20 tries")
        self._attach_read_cache()
        self._last_refresh = time.monotonic()

    def _replay_from_start(self, start: int = 0) -> None:
        """Rebuild the memtable: from the log's start, or from a background flush's mark
        (every record before it is sealed)."""
        self.mem.clear()
        self._replay(start, fresh=True)

    def _replay(self, start: int, *, fresh: bool = False) -> None:
        """Read-only opens: apply the log from `start`; note what is missing or damaged
        (`fresh`: the memtable was rebuilt, so only this replay's findings stand).
        FileNotFoundError: the writer rotated the log (take a new snapshot). holds: lock."""
        m = self.manifest
        try:
            self.wal_pos, problems, self._wal_at = replay_log(
                self.path, m.wal_id, start, m.schema, self.mem, m.dicts, m.sealed,
                flushed=m.flushed, synced=m.synced_of(m.wal_id),
                at=None if fresh else self._wal_at)
        except FileNotFoundError:
            with m.meta.begin() as txn:
                if int(m.meta.get_meta(txn, "wal_id")) != m.wal_id:
                    raise  # rotated since our snapshot
            # Still the current log, and gone: serve the sealed data and say what is missing.
            self.wal_pos, self._wal_at = 0, None
            problems = [missing_log(self.path, m.wal_id, m.synced_of(m.wal_id))]
        if problems or start == 0 or fresh:
            self.log_damage = [p.to_dict() for p in problems]

    # ================================================================== the published state
    @property
    def schema(self) -> Schema:
        return self.manifest.schema

    @property
    def settings(self) -> dict[str, Any]:
        return self.manifest.settings

    @property
    def index(self) -> HashIndex:
        return self.manifest.index

    @property
    def catalog(self) -> dict[int, FileInfo]:
        return self.manifest.catalog

    @property
    def dicts(self) -> dict[str, StringDict]:
        return self.manifest.dicts

    @property
    def files(self) -> ExtentFiles:
        return self.manifest.files

    @property
    def meta(self) -> Meta:
        return self.manifest.meta

    @property
    def seq(self) -> int:
        return self.manifest.seq

    @property
    def wal_id(self) -> int:
        return self.manifest.wal_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def flush_count(self) -> int:
        """Publications of real-time segments (full flushes and single-user seals): what the
        merge backlog counts."""
        return self._counters["flushes"] + self._counters["tail_seals"]

    # ================================================================== writes
    def check_writable(self) -> None:
        if self._closed:
            raise StoreClosed(f"{self.path} is closed")
        if self.read_only:
            raise ReadOnlyError(f"{self.path} was opened read_only=True; writes need the writer")
        failed = self._failed or (self.wal.failed if self.wal is not None else None)
        if failed is not None:
            raise WriterFailed(f"{self.path}: a write or fsync failed earlier ({failed}); this "
                               "writer acknowledges nothing more: reopen the store")

    def fail_stop(self, exc: BaseException) -> None:
        """A write, fsync or commit of the store failed: refuse every later write (Engine
        protocol). Whatever the operation (append, seal, flush, delete, merge, bulk load,
        checkpoint) and the error (an fsync's EIO, a full disk): after it the writer cannot
        know what of its own state reached the disk, and a retried fsync may report success
        for pages the kernel dropped; a reopen starts again from what is durable
        (docs/design/safety.md, sections 5 and 9). Other exceptions are left alone."""
        if io_failure(exc) and self._failed is None:
            self._failed = exc

    def append(self, user_id: Any, events: Mapping[str, Any]) -> int:
        """Append one user's events (columnar, any timestamp order). Atomic: all or nothing.
        Returns the number of events appended."""
        schema = self.manifest.schema
        one_call = type(events) is dict and prepare_mod.KERNEL is not None
        if one_call and type(user_id) is int and schema.user_type != "string":
            # A plain int key needs no coerce_user: the kernel takes int64 keys only and
            # leaves any other to the path below, which names the problem.
            done = self._append_call(schema, user_id, None, events)
            if done is not None:
                return done
            one_call = False  # declined: not again below
        self.check_writable()
        key = coerce_user(schema, user_id)
        if one_call:
            done = self._append_call(schema, key, None, events)
            if done is not None:
                return done
        ready = prepare(schema, key, None, events)  # the compiled kernel's plain cases
        if ready is not None:
            return self._append_grouped(*ready)
        ts, cols = validate_append(schema, events)  # never the caller's own arrays
        if ts.size == 0:
            return 0
        return self._append_grouped([key], [int(ts.size)], ts, cols)

    def append_batch(self, data: Any) -> int:
        """Append many users' events at once: a pyarrow Table/RecordBatch or a mapping of
        columns that includes the user column. Atomic: all or nothing."""
        self.check_writable()
        if type(data) is dict and self.schema.user_column in data:
            schema = self.schema
            if prepare_mod.KERNEL is not None and schema.user_type != "string":
                done = self._append_call(schema, None, data[schema.user_column], data)
                if done is not None:
                    return done
            ready = prepare(schema, None, data[schema.user_column], data)
            if ready is not None:
                return self._append_grouped(*ready)
        keys, counts, ts, cols = validate_batch(self.schema, data)
        if ts.size == 0:
            return 0
        return self._append_grouped(keys, counts, ts, cols)

    def _append_grouped(self, keys: list[Any], counts: list[int], ts: np.ndarray,
                        cols: dict[str, np.ndarray], payload: bytes | None = None) -> int:
        if payload is None:
            payload = wal_mod.encode_append(self.schema, keys, counts, ts, cols)
        n = int(ts.size)
        # Attribute lookups are a visible share of a one-event append (~7 us in all): the
        # manifest's fields are read once here, not through the properties.
        with self.lock:
            self.check_writable()
            m = self.manifest
            dicts, s = m.dicts, m.settings
            if dicts:
                for name, d in dicts.items():
                    d.check_room(cols[name])
            wal = self.wal
            assert wal is not None
            try:
                end = wal.append(payload, events=n)
            except WriterFailed:
                self._settle_jobs()
                raise
            mem = self.mem
            if dicts:
                full = add_events(mem, dicts, keys, counts, ts, cols, end=end,
                                  seal_at=int(s["tail_events"]))
            else:  # no string column to code
                full = mem.add_grouped(keys, counts, ts, cols, end, int(s["tail_events"]))
            counters = self._counters
            counters["appends"] += 1
            counters["appended_events"] += n
            need_flush = (mem.events >= s["memtable_events"]
                          or mem.over(s["memtable_bytes"])
                          or wal.size >= s["wal_bytes"])
        self._appended(wal, end, need_flush, full)
        return n

    def _append_call(self, schema: Any, key: Any, users: Any, columns: Mapping[str, Any]
                     ) -> int | None:
        """`_append_grouped` of a plain call (prepare.py) in one compiled call: checks, the
        record, its write and the memtable insert (native_append.c, `append_call`; ~2-3 us less
        than the steps one by one, docs/design/realtime.md, "One C call for an append").
        None, with nothing written, when the call needs the Python path: not a plain case,
        a string column near its cardinality limit, a new block, a log that must grow."""
        kernel = prepare_mod.KERNEL
        assert kernel is not None
        spec, min_ts = call_spec(schema)
        with self.lock:
            wal = self.wal
            if self._closed or self.read_only or self._failed is not None or wal is None \
                    or wal.failed is not None:
                self.check_writable()  # says which
            assert wal is not None
            m = self.manifest
            mem = self.mem
            blocks = mem.blocks
            if not blocks:
                return None
            s = m.settings
            try:
                got = wal.append_call(kernel.append_call, (spec, key, users, columns, min_ts,
                                      mem.parts, blocks[-1], s["tail_events"], m.dicts,
                                      MAX_STRING_CARDINALITY))
            except WriterFailed:
                self._settle_jobs()
                raise
            if got is None:
                return None
            if len(got) == 3:  # written to the log, not wholly added to the memtable
                self._failed = got[2]
                raise got[2]
            end, n, full, top, rows, refs = got
            mem.events += n
            mem.rows += n
            if top > mem.max_tail:
                mem.max_tail = top
            if refs:
                mem.tail_rows += rows
                mem.tail_refs += refs
            counters = self._counters
            counters["appends"] += 1
            counters["appended_events"] += n
            need_flush = (mem.events >= s["memtable_events"]
                          or mem.over(s["memtable_bytes"])
                          or end >= s["wal_bytes"])  # end: the log's size now
        # most one-event appends at `batch` have nothing more to do (~0.2 us a call less)
        if need_flush or full or wal.durability == "sync" or self._bg_merge is not None:
            self._appended(wal, end, need_flush, full)
        return n  # type: ignore[no-any-return]

    def _appended(self, wal: Any, end: int, need_flush: bool, full: list[Any]) -> None:
        """After an append's record and rows are in: the commit its durability asks for, then
        a flush or the seals it made due, and merge's throttle."""
        try:
            wal.commit(end)
        except WriterFailed:
            self._settle_jobs()
            raise
        if need_flush:
            self._flush_full()
        elif full:
            self._seal_users(full)
        if self._bg_merge is not None:
            self._bg_merge.throttle()  # waits only while merge is far behind (background.py)

    def _settle_jobs(self) -> None:
        """The log failed under this call: let a background flush in flight end first (it
        fails too and cuts what it wrote, or commits what was durable before the failure), so
        that what is on disk is settled when the caller hears of the failure."""
        with self.lock:
            if self._flush_thread is not threading.current_thread():
                self.wait_flush()

    def _needs_flush(self) -> bool:
        s = self.settings
        return (self.mem.events >= s["memtable_events"]
                or self.mem.over(s["memtable_bytes"])
                or (self.wal is not None and self.wal.size >= s["wal_bytes"]))

    def _seal_users(self, keys: list[Any]) -> None:
        """Seal these users' long tails into real-time segments on their own, without a log
        rotation: the commit records that each one's events up to the log's current end are
        sealed, so replays skip them (docs/design/realtime.md, "Partial seals"). Deferred
        while a background flush is in flight: the tails stay in the (capped) memtable, and
        the users' next appends after its commit seal them."""
        with self.lock:
            self.check_writable()
            if self._flush_thread is not None:
                return
            seal_at = int(self.settings["tail_events"])
            tails = [(k, t) for k in dict.fromkeys(keys)
                     if (t := self.mem.tail_for_seal(k)) is not None and t.count >= seal_at]
            if not tails:
                return
            wal = self.wal
            assert wal is not None
            through = wal.size
            wal.sync_soon()  # the log's fsync runs while the tails are encoded
            w = self.writers["rt"]
            with self._sealing(w):
                users, events = sealing.seal_tails(self.manifest, w, tails)
                self._fault("seal:after_write")
                w.sync()
                # A "sealed through" offset past the durable end of the log could, after a
                # power loss cut the log, make a replay skip newer records written at lower
                # offsets (rule R1): durable before the commit that records it.
                wal.sync_to(through)
                self.publish(Edit(files=w.pending(), users=users, dict_entries=True,
                                  sealed={k: through for k, _t in tails}), writers=(w,))
            self._fault("seal:after_commit")
            for key, _tail in tails:
                self.mem.drop_through(key, through)
            self._counters["tail_seals"] += 1
            self._counters["tail_sealed_events"] += events

    def wait_flush(self) -> None:
        """Return once no background flush is in flight (Engine protocol): everything that
        changes users' extent lists — merge and reclaim publishes, deletes, bulk loads, a
        flush — calls it first, under the lock, since the flush computes its lists outside the
        lock against the index as it was. holds: the store lock (released while waiting)."""
        while self._flush_thread is not None:
            if self._flush_thread is threading.current_thread():
                raise RuntimeError("the background flush waited for itself")
            self._flushed.wait()

    def _flush_full(self) -> None:
        """The memtable reached `memtable_events` or `memtable_bytes` (or the log
        `wal_bytes`) after an append.
        With `flush_worker = "thread"` and the log below `wal_bytes`: hand the memtable to a
        background flush and go on with a new one; appends wait only when the new one is full
        too while the first is still being sealed (the memory bound: two memtables). Else
        (and at `wal_bytes`, where the log rotates) the flush runs here."""
        s = self.settings
        if s["flush_worker"] != "thread":
            self.flush()
            return
        with self.lock:
            self.check_writable()
            self.wait_flush()
            wal = self.wal
            assert wal is not None
            if wal.size >= s["wal_bytes"]:
                self.flush()
                return
            if (self.mem.events < s["memtable_events"]
                    and not self.mem.over(s["memtable_bytes"])):
                return  # flushed meanwhile
            frozen, self.mem = self.mem, MemTable()
            self.frozen = frozen
            # Every unsealed event of the frozen memtable is in a record ending at or before
            # this offset; the flush's commit records it as each user's "sealed through".
            through = wal.size
            t = threading.Thread(target=self._flush_frozen, args=(frozen, through),
                                 name="seqvault-flush", daemon=True)
            self._flush_thread = t
            t.start()

    def _flush_frozen(self, frozen: MemTable, through: int) -> None:
        """The background flush: seal `frozen` outside the store lock (appends and reads go
        on; nothing else changes extent lists meanwhile), then publish it under the lock as
        one commit with every one of its users "sealed through" `through` — a partial seal of
        every user at once, so no log rotation and no new record kind: replays skip exactly
        the frozen memtable's records (docs/format/manifest.md, "a background flush")."""
        w = self.writers["rt"]
        wal = self.wal
        assert wal is not None
        try:
            try:
                with gcpause.paused():
                    users = sealing.seal_memtable(self.manifest, w, frozen)
                    self._fault("bgflush:after_write")
                    w.sync()
                    wal.sync_to(through)  # rule R1: the offset it records is durable
                with self.lock:
                    # One `flushed` mark for all of the frozen memtable's users, not a "sealed
                    # through" record each: a million-user flush wrote a million LMDB records.
                    edit = (Edit(files=w.pending(), users=users, dict_entries=True,
                                 flushed=through)
                            if isinstance(users, dict) else
                            Edit(files=w.pending(), batch=users, dict_entries=True,
                                 flushed=through))
                    self.publish(edit, writers=(w,))
                    self._fault("bgflush:after_commit")
                    self.frozen = None
                    self._counters["flushes"] += 1
            except BaseException as exc:
                with self.lock:
                    # Nothing more is acknowledged (the frozen events stay readable here and
                    # in the log); a reopen replays them. Not only I/O errors: nobody would
                    # see an exception of this thread otherwise.
                    self.fail_stop(exc)
                    if self._failed is None:
                        self._failed = exc
                    self.manifest.forget_claims()
                    try:
                        w.rollback()
                    except OSError:
                        pass
        finally:
            with self.lock:
                self._flush_thread = None
                self._flushed.notify_all()

    def flush(self, *, rotate: bool = False) -> None:
        """Seal every user's in-memory events into real-time segments and start a new log
        (after a background flush in flight, if any, has committed).
        `rotate`: start a new log even when there is nothing to seal (merge does, to delete a
        log that holds a deleted user's records)."""
        self.check_writable()
        with self.lock:
            self.wait_flush()
            self.check_writable()
            if self.mem.events == 0:
                if rotate:
                    with self._sealing(self.writers["rt"]):
                        self.publish(Edit(), rotate_log=True)
                # Only sealed-through chunks are left: their events are in segments, and the
                # log's `sealed` records skip them on a replay, so memory lets them go.
                self.mem.clear()
                return
            w = self.writers["rt"]
            with self._sealing(w), gcpause.paused():
                users = sealing.seal_memtable(self.manifest, w, self.mem)
                w.sync()
                edit = (Edit(files=w.pending(), users=users, dict_entries=True)
                        if isinstance(users, dict) else
                        Edit(files=w.pending(), batch=users, dict_entries=True))
                self.publish(edit, rotate_log=True, writers=(w,))
            self.mem.clear()
            self._counters["flushes"] += 1

    @contextmanager
    def _sealing(self, w: SegmentWriter) -> Iterator[None]:
        """A seal or flush that fails cuts what it wrote, and a failed write or fsync stops the
        writer (fail-stop: docs/design/safety.md)."""
        try:
            yield
        except BaseException as exc:
            self.fail_stop(exc)
            self.manifest.forget_claims()
            try:
                w.rollback()
            except OSError:  # the disk is failing: the next writer open cuts these bytes
                pass
            if isinstance(exc, OSError):
                raise WriterFailed(f"{self.path}: sealing events into segments failed ({exc}); "
                                   "nothing more is acknowledged: reopen the store") from exc
            raise

    # ================================================================== delete
    def delete(self, user_id: Any, before: int | None = None) -> int:
        """Delete a user's events: all of them, or with `before` those with ts < before.
        Returns how many events were removed; an unknown user (or nothing older than
        `before`) is a no-op that returns 0 and commits nothing.

        One commit (docs/design/safety.md, "Deleting a user"): the user's new extent list
        (empty, or the kept events rewritten as real-time segments), a "sealed through" record
        at the log's fsynced end so every replay skips the user's logged events, and the files
        and log that held them added to the purge set. Reads see the result at once here and
        in read-only processes after their refresh; the next `merge()` rewrites and deletes
        those files and rotates the log, so the bytes are gone from the store directory.
        """
        self.check_writable()
        key = coerce_user(self.schema, user_id)
        if before is not None:
            if isinstance(before, bool) or not isinstance(before, int | np.integer):
                raise ValidationError(f"before: value {before!r} is a {type(before).__name__}; "
                                      "expected an integer timestamp in the time column's unit",
                                      column="before")
            before = int(before)
        with self.lock:
            self.check_writable()
            self.wait_flush()
            m = self.manifest
            # Only the key's own extents: a never-published key may share its default slot
            # with another user (a hash collision), whose extents are not to be deleted.
            h, old = m.owned_extents(key)
            tail = self.mem.get(key)
            if not old and tail is None:
                return 0
            total = sum(e.count for e in old) + (tail.count if tail is not None else 0)
            wal = self.wal
            assert wal is not None
            through = wal.size
            wal.sync_to(through)  # rule R1: the sealed-through offset is durable
            w = self.writers["rt"]
            with self._sealing(w):  # a failure cuts what it wrote; an OSError stops the writer
                fresh = self._kept_segments(w, key, h, old, tail, before)
                kept = sum(e.count for e in fresh)
                removed = total - kept
                if removed == 0:
                    w.rollback()
                    m.forget_claims()
                    return 0
                self._fault("delete:after_write")
                w.sync()
                purge = Purge(m.purge.files | {e.file for e in old} | self.active_files(),
                              m.purge.wals | {m.wal_id})
                counters = {"deleted_events": removed}
                if kept == 0:
                    counters["deleted_users"] = 1
                users: dict[int, list[Extent]] = {}
                aliases: dict[bytes, int | None] = {}
                if fresh:  # kept events: at the key's slot (claimed if it had none)
                    users[h if old else m.claim(key)] = list(reversed(fresh))
                elif old:
                    users[h] = []
                    kb = key_bytes(key)[1]
                    if kb in m.index.aliases:  # erased from the checkpoint this commit writes
                        aliases[kb] = None
                self.publish(Edit(files=w.pending(), users=users, dict_entries=True,
                                  sealed={key: through}, counters=counters, purge=purge,
                                  aliases=aliases), writers=(w,))
            self._fault("delete:after_commit")
            self.mem.drop_through(key, through)
            return removed

    def _kept_segments(self, w: SegmentWriter, key: Any, h: int, old: list[Extent],
                       tail: Any, before: int | None) -> list[Extent]:
        """A `before=` delete: the user's events with ts >= before (sealed and in memory),
        written as new real-time segments (oldest first). holds: the store lock."""
        if before is None:
            return []
        m = self.manifest
        schema = m.schema
        got = user_events(m.files, list(reversed(old)), schema, expect_hash=h,
                          slot_of=m.index.slot_of)
        ts_parts = [got.ts]
        col_parts = {c.name: [got.cols[c.id]] for c in schema.columns}
        if tail is not None:
            tts, tcols = tail.sorted_arrays()
            ts_parts.append(tts)
            for c in schema.columns:
                col_parts[c.name].append(tcols[c.name])
        ts = np.concatenate(ts_parts)
        cols = {k: np.concatenate(v) for k, v in col_parts.items()}
        order = np.argsort(ts, kind="stable")  # ties: sealed (older arrival) first
        ts = ts[order]
        cols = {k: v[order] for k, v in cols.items()}
        lo = int(np.searchsorted(ts, before, side="left"))
        ts = ts[lo:]
        cols = {k: v[lo:] for k, v in cols.items()}
        fresh = []
        if ts.size:
            level = int(self.settings["zstd_level"])
            bounds = segment_bounds(ts, int(self.settings["segment_events"]))
            for a, b in zip(bounds[:-1], bounds[1:]):
                blob = encode_user_segment(schema, key, ts[a:b],
                                           {k: v[a:b] for k, v in cols.items()}, level)
                fresh.append(w.append(blob, b - a, int(ts[a]), int(ts[b - 1])))
        return fresh

    def publish(self, edit: Edit, *, rotate_log: bool = False,
                writers: tuple[Published, ...] = ()) -> int:
        """The commit path of every writer (Engine protocol). holds: the store lock."""
        if self._failed is not None:  # a stopped writer commits nothing more, whoever asks
            self.check_writable()
        if self._flush_thread is not None and self._flush_thread is not threading.current_thread():
            # Every commit but the background flush's own waits for it (its callers already
            # did, before reading what they publish): a commit also settles the manifest's
            # per-operation claims, which are the flush's until it commits.
            self.wait_flush()
        m = self.manifest
        new_path: Path | None = None
        new_wal: wal_mod.WalWriter | None = None
        target = m.seq + 1
        if not rotate_log and self.wal is not None:
            at = self.wal.synced
            edit.wal_synced = (m.wal_id, at.end, at.next_seq - 1, at.events)
        try:
            if rotate_log:
                edit.wal_id = m.wal_id + 1
                new_path = self.path / "wal" / wal_mod.wal_name(edit.wal_id)
                wal_mod.create_wal(new_path, edit.wal_id)
                edit.wal_synced = (edit.wal_id, wal_mod.FILE_HEADER_SIZE, 0, 0)
                try:  # opened before the commit: failing here commits nothing
                    new_wal = wal_mod.WalWriter(new_path, self.settings["durability"],
                                                batch_interval=self.settings["batch_interval"])
                except BaseException:
                    new_path.unlink(missing_ok=True)
                    ring_path(new_path).unlink(missing_ok=True)
                    raise
            try:
                seq = m.commit(edit)
            except BaseException:
                if new_wal is not None:
                    new_wal.close(sync=False)
                if m.landed(target):
                    # Durable although reported failed (e.g. the fsync of LMDB's meta page):
                    # nothing it refers to may be cut (the callers' rollbacks now cut
                    # nothing); the log it replaced is moot. The writer keeps its pre-commit
                    # view in memory and stops.
                    for w in writers:
                        w.published_now()
                    if new_path is not None and self.wal is not None:
                        self.wal.path.unlink(missing_ok=True)
                elif new_path is not None:
                    new_path.unlink(missing_ok=True)
                    ring_path(new_path).unlink(missing_ok=True)
                raise
            for w in writers:
                w.published_now()
            if new_wal is not None:
                old, self.wal = self.wal, new_wal
                if old is not None:  # every record in it is sealed by this commit
                    old.close(sync=False)
                    old.path.unlink(missing_ok=True)
                    ring_path(old.path).unlink(missing_ok=True)
        except BaseException as exc:
            self.fail_stop(exc)
            raise
        try:
            m.maybe_checkpoint()
        except Exception as exc:
            if not io_failure(exc):
                raise
            # The commit is durable (LMDB fsynced it), so the call that made it succeeded and
            # its caller finishes its bookkeeping; the failed checkpoint (its file removed)
            # stops the writer, and the next write says why.
            self.fail_stop(exc)
        return seq

    def checkpoint(self) -> None:
        """Write the whole DRAM index to a checkpoint file and drop the index deltas it covers
        (faster opens; docs/format/index.md)."""
        self.check_writable()
        with self.lock:
            self.wait_flush()
            try:
                self.manifest.checkpoint()
            except BaseException as exc:
                self.fail_stop(exc)
                raise

    def sync(self) -> None:
        """Make every acknowledged append durable now (fsync the log)."""
        self.check_writable()
        if self.wal is not None:
            self.wal.sync()

    def active_files(self) -> set[int]:
        ids = {w.file_id for w in self.writers.values() if w.file_id is not None}
        if self._merger is not None:
            ids |= self._merger.active_files()
        return ids

    # ================================================================== merge, bulk, schema
    def merge(self, users: Iterable[Any] | None = None, *, reclaim: bool = True,
              reclaim_ratio: float | None = None, worker: str = "thread", nice: int = 0,
              progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
        """Fold real-time segments (and small lifetime ones) into recency-tiered lifetime
        segments sorted by timestamp (ties keep arrival order); apply the schema's retention;
        with `reclaim`, rewrite the live extents of files whose live ratio is below
        `reclaim_ratio` (this call's override of the setting) and delete files nothing refers
        to any more. `users`: only these (default: every user with work to do). Every pass,
        also one with `users`, finishes the purge of deleted users (docs/design/safety.md).

        `worker="thread"` (default) decodes and encodes in this process, the caller waits;
        `worker="process"` in the merge process (what the background merger uses: the heavy
        part never holds this process's GIL, so reads in other threads are not slowed). `nice`:
        CPU niceness of that work (0: a caller waiting for its merge is not put behind every
        other process of a busy machine; the background merger uses `merge_nice`).
        `progress(phase, done, total)` after every batch (phases "merge", "reclaim").
        Never blocks readers; appends wait only for each batch's short publish.
        Crash-safe at every step (docs/design/merge.md). Returns a JSON-able summary. Raises
        CorruptionError naming the file and the user if a segment to merge fails its checksums
        (nothing of that batch is published), MergeFailed if the merge process dies.
        """
        self.check_writable()
        return self._get_merger().run(users, reclaim=reclaim, reclaim_ratio=reclaim_ratio,
                                      worker=worker, nice=nice, progress=progress)

    def wait_merged(self, timeout: float | None = None) -> bool:
        """With `auto_merge`: wait until the background merger has merged every flush made so
        far (True), or until `timeout` seconds passed or it stopped (False). Without it: True
        when nothing flushed since the last full merge() waits to be merged."""
        bg = self._bg_merge
        if bg is None:
            return self._merger is None or self._merger.backlog() == 0
        return bg.wait_merged(timeout)

    def _get_merger(self) -> Merger:
        if self._merger is None:
            self._merger = Merger(self)
        return self._merger

    def bulk_writer(self, **kwargs: Any) -> BulkWriter:
        """A writer of lifetime segments published in one transaction (ingest, loads)."""
        return BulkWriter(self, **kwargs)

    def evolve_schema(self, new: Schema | str | os.PathLike[str]) -> Schema:
        """Adopt `new` if it only adds columns (with defaults) or changes retention."""
        self.check_writable()
        if not isinstance(new, Schema):
            new = Schema.load(new)
        with self.lock:
            evolved = self.schema.evolve_to(new)
            if evolved is self.schema:
                return self.schema
            self.flush()  # log records then all carry the current schema version
            self.publish(Edit(schema=evolved))
            return evolved

    def schema_history(self) -> list[Schema]:
        return self.manifest.schema_history()

    # ================================================================== reads
    def read(self, user_id: Any, last: int | None = None, columns: Sequence[str] | None = None,
             before: int | None = None, since: int | None = None, *,
             strings: str = "decode") -> UserSequence:
        """A user's events in ascending timestamp order (ties: arrival order).

        `since` keeps ts >= since, `before` keeps ts < before; `last` then keeps the newest N.
        An unknown user reads as an empty sequence.

        `strings="codes"` returns string columns as uint32 dictionary codes and puts the
        code → string arrays in ``seq.dictionaries`` (for Arrow dictionary arrays and model
        vocabularies: no per-event string work at all).
        """
        if self._closed:
            raise StoreClosed(f"{self.path} is closed")
        if self.read_only:
            self._maybe_refresh()
        key = coerce_user(self.schema, user_id)
        plan = plan_read(self.schema, last, columns, before, since, strings)
        kb = key_bytes(key)[1]
        self._counters["reads"] += 1
        for _attempt in range(20):
            with self.lock:
                m = self.manifest
                seq = m.seq
                h = m.index.slot_of(kb)
                schema, dicts = m.schema, dict(m.dicts)
                tail = self._tail(key)
                got = None
                if plan.last is not None and plain_newest(plan):
                    got = reads.newest_plan(m.index, h, tail, plan.last)
                planned = got is not None
                if got is not None:
                    sources = got
                elif plan.keep is not None:  # the retention window first, as merge would
                    sources = reads.choose_plan(m.index, h, tail, plan.keep, None, plan.since)
                else:
                    sources = reads.choose_plan(m.index, h, tail, plan.last, plan.before,
                                                plan.since)
            try:
                return read_sources(m.files, schema, dicts, key, kb, sources, plan, planned,
                                    prechosen=not planned)
            except ForeignSegment as exc:
                with self.lock:
                    if m.seq != seq:
                        # A commit since the plan (a background flush publishing this key at
                        # an alternate slot, say): judge the segment against a new snapshot.
                        continue
                    if kb in m.index.aliases or m.index.slot_of(exc.owner) != h:
                        raise  # two keys at one slot, or a stray segment: a damaged index
                # The key was never published and its default slot is another user's (a hash
                # collision): it has no sealed events in this snapshot, only its memtable tail.
                mem = sources_of([], tail)
                return read_sources(m.files, schema, dicts, key, kb, mem, plan)
            except FileNotFoundError:
                # Space reclamation deleted a file of this snapshot (docs/design/merge.md,
                # "Deleting files"): a newer snapshot no longer refers to it.
                if self.read_only:
                    self.refresh()
        raise CorruptionError(f"{self.path}: user {key!r}: extent files kept disappearing "
                              "under 20 consecutive snapshots")

    def _tail(self, key: Any) -> Any:
        """The key's unsealed events: the memtable's tail, joined with the frozen memtable's
        while a background flush is in flight. holds: the store lock."""
        tail = self.mem.get(key)
        frozen = self.frozen
        if frozen is None:
            return tail
        old = frozen.get(key)
        if old is None:
            return tail
        return old if tail is None else JoinedTail(old, tail)

    def read_many(self, user_ids: Iterable[Any], last: int | None = None,
                  columns: Sequence[str] | None = None, before: Any = None,
                  since: int | None = None, *, strings: str = "decode") -> list[UserSequence]:
        """`read` for many users, in the order asked. `before` may be one value or one per user."""
        users = list(user_ids)
        if before is None or isinstance(before, int | np.integer):
            befores: list[Any] = [before] * len(users)
        else:
            befores = list(before)
            if len(befores) != len(users):
                raise ValidationError(f"before: {len(befores)} values for {len(users)} users",
                                      column="before")
        return [self.read(u, last=last, columns=columns, before=b, since=since, strings=strings)
                for u, b in zip(users, befores)]

    def _maybe_refresh(self) -> None:
        if time.monotonic() - self._last_refresh >= self.settings["refresh_interval"]:
            self.refresh()

    def refresh(self) -> None:
        """Read-only opens: pick up the writer's newest commits and log records now."""
        if not self.read_only:
            return
        for attempt in range(20):
            try:
                with self.lock:
                    found = self.manifest.refresh()
                    if found.rebuild:
                        self._replay_from_start(found.start)
                    else:
                        for h, tag, through in found.sealed:
                            key = self.mem.key_of(h, tag)
                            if key is not None:
                                self.mem.drop_through(key, through)
                        self._replay(self.wal_pos)
                self._last_refresh = time.monotonic()
                return
            except FileNotFoundError:
                # The writer rotated the log (or replaced a file) between our metadata snapshot
                # and the file read; take a new snapshot.
                time.sleep(0.001 * (attempt + 1))
        raise CorruptionError(f"{self.path}: could not get a consistent view after 20 tries")

    # ================================================================== info / close
    def users(self) -> Iterator[Any]:
        """Every user key in the store (sealed and in memory), in no particular order."""
        with self.lock:
            self.wait_flush()
            idx = self.index
            heads = [int(idx.u_head[r]) for r in idx.rows()]
            mem_keys = list(self.mem.users)
        seen = set(mem_keys)
        yield from mem_keys
        for head in heads:
            if head < 0:
                continue
            f, o, ln = int(idx.e_file[head]), int(idx.e_off[head]), int(idx.e_len[head])
            # Only the header is read (and checked): the key is all a listing needs.
            buf = self.files.pread(f, o, min(ln, HEAD_PROBE))
            need = min(ln, header_size(buf))
            if need > len(buf):
                buf = self.files.pread(f, o, need)
            key = key_from_bytes(*read_key(buf, where=f"{self.files.path(f)} @ {o}"))
            if key not in seen:
                yield key

    def stats(self) -> dict[str, Any]:
        """Counts and sizes (JSON-able)."""
        with self.lock:
            self.wait_flush()  # counts of one memtable and the index it was sealed into
            m = self.manifest
            files = {"rt": 0, "lt": 0}
            data_bytes = 0
            for info in m.catalog.values():
                files[info.kind] = files.get(info.kind, 0) + 1
                data_bytes += info.size
            idx = m.index
            # Rows of deleted users stay in the index with no extents: not users any more.
            n_sealed = int((idx.u_head[:idx.n_users] >= 0).sum())
            kept = self._retained()
            wal_bytes = sum(p.stat().st_size for p in (self.path / "wal").iterdir())
            meta_bytes = sum(p.stat().st_size for p in (self.path / "meta").iterdir())
            bg = self._bg_merge
            return {
                "path": str(self.path),
                "read_only": self.read_only,
                "schema_version": m.schema.version,
                # What reads return (retention applied); what retention hides until the
                # next merge drops it is `expired_events` (seqvault/retained.py).
                "users": kept.users,
                "events": kept.events,
                "expired_events": kept.expired_events,
                "sealed_events": m.index.total_events,
                "memtable_events": self.mem.events,
                "memtable_bytes": self.mem.nbytes(),
                "segments": m.index.live_extents,
                "files": files,
                "data_bytes": data_bytes,
                "wal_bytes": wal_bytes,
                "meta_bytes": meta_bytes,
                "disk_bytes": data_bytes + wal_bytes + meta_bytes,
                "index_bytes": m.index.nbytes,
                "index_bytes_per_user": (m.index.nbytes / n_sealed) if n_sealed else 0.0,
                "commit_seq": m.seq,
                "durability": m.settings["durability"],
                "retention": m.schema.retention.to_dict(),
                "wal_fsyncs": self.wal.fsyncs if self.wal is not None else 0,
                "checkpoints": m.checkpoints,
                "delete_pending_files": len(m.purge.files),
                "delete_pending_logs": len(m.purge.wals),
                "log_damage": list(self.log_damage),
                **self._counters,
                **merge_stats(self, self._merger, self._live_bytes()),
                "auto_merge": bool(bg is not None and bg.is_alive()),
                "auto_merge_error": repr(bg.error) if bg is not None and bg.error else None,
                **(m.files.cache.stats() if m.files.cache is not None else
                   {"read_cache_bytes": 0, "read_cache_segments": 0, "read_cache_hits": 0,
                    "read_cache_misses": 0}),
            }

    def _retained(self) -> Retained:
        """Users and events that reads return, and those retention hides. holds: lock."""
        m = self.manifest
        idx = m.index
        schema = m.schema

        def tails() -> Iterator[tuple[int, np.ndarray]]:
            keys, ts, _cols, starts, counts = self.mem.grouped()
            for key, a, n in zip(keys, starts.tolist(), counts.tolist(), strict=True):
                yield idx.find(idx.slot_of(key_bytes(key)[1])), ts[a:a + n]

        def read_ts(row: int, ext: Extent) -> np.ndarray:
            where = f"{self.files.path(ext.file)} @ {ext.off}"
            buf = self.files.pread(ext.file, ext.off, ext.length)
            header = parse_header(buf, where=where)
            return decode_columns(buf, header, [TIME_COLUMN_ID], where=where)[TIME_COLUMN_ID]

        return retained_counts(idx, tails(), retention_cutoff(schema),
                               schema.retention.max_events, read_ts)

    def _live_bytes(self) -> int:
        """Live bytes of all files, derived from the index; cached per commit. holds: lock."""
        m = self.manifest
        key = (m.seq, m.checkpoints)
        if self._live_cache is None or self._live_cache[:2] != key:
            self._live_cache = (*key, sum(live_bytes(m.index).values()))
        return self._live_cache[2]

    def verify(self, update: Any = None) -> dict[str, Any]:
        """Check every extent, file size and log record (seqvault/verify.py); a report, never
        an exception, for problems found."""
        if self.read_only:
            self.refresh()
        with self.lock:
            self.wait_flush()
            return verify_store(self.path, self.manifest, update)

    def close(self, *, flush: bool = True) -> None:
        """Seal the memtable (optional), checkpoint the index, release the writer lock."""
        if self._closed:
            return
        try:
            if not self.read_only:
                if self._bg_merge is not None:
                    self._bg_merge.stop()  # finishes the batch in flight, outside the lock
                with self.lock:
                    self.wait_flush()
                    failed = self._failed or (self.wal.failed if self.wal else None)
                    if flush and failed is None:  # after a failure: nothing more is written
                        self.flush()
                        self.check_writable()  # the flush's checkpoint failed: say so
                        self.manifest.maybe_checkpoint(force=True)
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        # Everything is released even when closing the log fails (its last fsync): a close
        # that raised must still give the writer lock back, or no reopen could recover.
        try:
            if self.wal is not None:
                try:
                    self.wal.close(sync=self._failed is None)
                finally:
                    self.wal = None
        finally:
            for w in self.writers.values():
                w.close()
            self.writers = {}
            if self._merger is not None:
                self._merger.close()
            manifest = getattr(self, "manifest", None)  # absent if the open failed before it
            if manifest is not None:
                manifest.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> SeqVault:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "writer"
        return f"SeqVault({str(self.path)!r}, {mode}, closed={self._closed})"
