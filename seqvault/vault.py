"""SeqVault: the store API (open, append, read, flush, close) over the storage layers.

Layers, bottom up: encoding/segment (pure bytes) · files/wal/meta/index (storage) · this module
(the store) · cli/ and server/ (interfaces). Store layout and the commit protocol are in
docs/format/manifest.md; the read algorithm in docs/design/architecture.md.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from . import wal as wal_mod
from .bulk import BulkWriter
from .errors import (
    CorruptionError,
    NotFound,
    ReadOnlyError,
    SchemaError,
    StoreClosed,
    StoreLocked,
    ValidationError,
)
from .files import DEFAULT_MAX_FILE, ExtentFiles, FileAppender, file_name, parse_file_name
from .index import MAX_FILE_BYTES, Extent, HashIndex, pack_extents, unpack_extents, user_hash
from .memtable import MemTable, StringDict
from .merge import MERGE_DEFAULTS, BackgroundMerger, Merger, merge_stats
from .meta import (
    STORE_FORMAT_VERSION,
    Meta,
    delta_key,
    dict_key,
    pack,
    parse_delta_key,
    u32,
    unpack,
)
from .reads import Source, UserSequence, assemble, choose_sources, decode_extent
from .schema import TIME_UNITS, Schema
from .segment import (
    encode_segment,
    key_bytes,
    key_from_bytes,
    parse_header,
)
from .validate import coerce_user, coerce_users, validate_events

DEFAULT_SETTINGS: dict[str, Any] = {
    "durability": "batch",
    "memtable_events": 262_144,  # flush when the log holds this many events ...
    "tail_events": 16_384,  # ... or one user's unsealed tail reaches this ...
    "wal_bytes": 64 << 20,  # ... or the log reaches this size
    "segment_events": 65_536,  # split a user's flush into segments of at most this many events
    "lifetime_segment_events": 32_768,  # target size of lifetime segments (merge, ingest)
    "max_file_bytes": DEFAULT_MAX_FILE,
    "checkpoint_deltas": 50_000,  # write a full index checkpoint after this many delta records
    "batch_interval": 0.005,  # seconds between fsyncs in durability="batch"
    "refresh_interval": 0.05,  # read-only opens look for new commits at most this often
    "zstd_level": 3,
    **MERGE_DEFAULTS,  # lifetime merge, reclamation, background merge (seqvault/merge.py)
}


class SeqVault:
    """A store directory. Use `SeqVault.open(path, ...)`; also a context manager."""

    # ================================================================== open / create
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
        given here are persisted with the store and kept on reopen.
        """
        unknown = set(settings) - set(DEFAULT_SETTINGS) - {"auto_merge"}
        if unknown:
            raise TypeError(f"SeqVault.open: unknown setting(s) {sorted(unknown)}; known: "
                            f"{sorted(DEFAULT_SETTINGS)}")
        if durability is not None:
            settings["durability"] = durability
        if isinstance(schema, str | os.PathLike):
            schema = Schema.load(schema)
        return cls(Path(path), schema, read_only=read_only, create=create, settings=settings)

    def __init__(self, path: Path, schema: Schema | None, *, read_only: bool, create: bool,
                 settings: dict[str, Any]) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.RLock()
        self._closed = False
        self._lock_fd: int | None = None
        self.mem = MemTable()
        self.dicts: dict[str, StringDict] = {}
        self.catalog: dict[int, dict[str, Any]] = {}
        self._appenders: dict[str, FileAppender] = {}
        self.wal: wal_mod.WalWriter | None = None
        self._last_refresh = 0.0
        # A read-only open keeps its own refresh_interval (other settings are the store's).
        self._own_settings = ({k: v for k, v in settings.items() if k == "refresh_interval"}
                              if read_only else {})
        self._merger: Merger | None = None
        self._bg_merge: BackgroundMerger | None = None
        self._counters = {"appends": 0, "appended_events": 0, "flushes": 0, "reads": 0,
                          "checkpoints": 0, "recovered_events": 0, "torn_tail_bytes": 0}
        exists = _created(path)
        if not exists:
            if read_only or not create:
                raise NotFound(f"{path} is not a SeqVault store (no {path / 'meta'}); create it "
                               "with SeqVault.open(path, schema=...) or `seqvault init`")
            if schema is None:
                raise SchemaError(f"{path} does not exist yet: a schema is needed to create it "
                                  "(SeqVault.open(path, schema=Schema.load(...)))")
        try:
            if read_only:
                self._open_reader()
            else:
                path.mkdir(parents=True, exist_ok=True)
                self._take_lock()
                if not exists:
                    self._create(schema, settings)  # type: ignore[arg-type]
                self._open_writer(settings)
                if exists and schema is not None:
                    self.evolve_schema(schema)
                if settings.get("auto_merge"):
                    self._bg_merge = BackgroundMerger(self, self._get_merger())
                    self._bg_merge.start()
        except BaseException:
            self._release()
            raise

    def _take_lock(self) -> None:
        lock_path = self.path / "LOCK"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode().strip()
            finally:
                os.close(fd)
            pid = int(holder) if holder.isdigit() else None
            raise StoreLocked(f"{self.path} is open for writing by another process (pid {holder or '?'}); "
                              "open it with read_only=True, or stop that process", pid=pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _create(self, schema: Schema, settings: dict[str, Any]) -> None:
        (self.path / "wal").mkdir(exist_ok=True)
        (self.path / "data").mkdir(exist_ok=True)
        (self.path / "meta").mkdir(exist_ok=True)
        wal_mod.create_wal(self.path / "wal" / wal_mod.wal_name(1), 1)
        meta = Meta(self.path / "meta", read_only=False)
        try:
            stored = {k: v for k, v in settings.items() if k in DEFAULT_SETTINGS}
            with meta.begin(write=True) as txn:
                meta.set_meta(txn, "format_version", STORE_FORMAT_VERSION)
                meta.set_meta(txn, "schema_version", schema.version)
                meta.put(txn, "schemas", u32(schema.version), schema.to_json().encode())
                meta.set_meta(txn, "settings", stored)
                meta.set_meta(txn, "wal_id", 1)
                meta.set_meta(txn, "seq", 0)
                meta.set_meta(txn, "ckpt_seq", 0)
                meta.set_meta(txn, "next_file_id", 1)
                meta.set_meta(txn, "created_ns", time.time_ns())
        finally:
            meta.close()

    def _load_common(self, txn: Any) -> None:
        """State shared by writers and readers, read in one LMDB transaction."""
        self.meta.check_version(txn)
        version = self.meta.get_meta(txn, "schema_version")
        raw = self.meta.get(txn, "schemas", u32(version))
        if raw is None:
            raise CorruptionError(f"{self.path}: schema version {version} is missing")
        self.schema = Schema.from_json(raw)
        stored = self.meta.get_meta(txn, "settings", {}) or {}
        self.settings = {**DEFAULT_SETTINGS, **stored, **self._own_settings}
        self.seq = int(self.meta.get_meta(txn, "seq"))
        self.ckpt_seq = int(self.meta.get_meta(txn, "ckpt_seq"))
        self.wal_id = int(self.meta.get_meta(txn, "wal_id"))
        self.catalog = {}
        self.files = getattr(self, "files", None) or ExtentFiles(self.path / "data")
        for k, v in self.meta.items(txn, "files"):
            fid = int.from_bytes(k, "big")
            info = unpack(v)
            self.catalog[fid] = info
            self.files.register(fid, info["kind"])
        self.files.retire_missing(self.catalog)  # dropped by space reclamation
        self._load_dicts(txn)
        self.index = self._load_index(txn)

    def _load_dicts(self, txn: Any) -> None:
        values: dict[int, list[str]] = {}
        for k, v in self.meta.items(txn, "dicts"):
            col_id = int.from_bytes(k[:2], "big")
            values.setdefault(col_id, []).append(v.decode("utf-8"))
        self.dicts = {c.name: StringDict(c.name, values.get(c.id, ()))
                      for c in self.schema.columns if c.is_string}

    def _load_index(self, txn: Any) -> HashIndex:
        blob = self.meta.get(txn, "ckpt", b"index")
        index = HashIndex.from_bytes(blob) if blob is not None else HashIndex()
        start = delta_key(self.ckpt_seq + 1, 0)
        applied = 0
        for k, v in self.meta.items(txn, "delta", start):
            _seq, h = parse_delta_key(k)
            index.set_extents(h, unpack_extents(v))
            applied += 1
        self._deltas_since_ckpt = applied  # a checkpoint is due once this passes the setting
        return index

    def _open_writer(self, settings: dict[str, Any]) -> None:
        self.meta = Meta(self.path / "meta", read_only=False)
        with self.meta.begin() as txn:
            self._load_common(txn)
        changed = {k: v for k, v in settings.items()
                   if k in DEFAULT_SETTINGS and self.settings.get(k) != v}
        if changed:
            self.settings.update(changed)
            with self.meta.begin(write=True) as txn:
                stored = self.meta.get_meta(txn, "settings", {}) or {}
                stored.update(changed)
                self.meta.set_meta(txn, "settings", stored)
        if not 0 < int(self.settings["max_file_bytes"]) <= MAX_FILE_BYTES:
            raise ValueError(f"max_file_bytes: {self.settings['max_file_bytes']} must be between 1 "
                             f"and {MAX_FILE_BYTES} (extent offsets are 32-bit)")
        if self.settings["durability"] not in wal_mod.DURABILITY_MODES:
            raise ValueError(f"durability: {self.settings['durability']!r} is not one of "
                             f"{wal_mod.DURABILITY_MODES}")
        self._repair_files()
        # Spill directories of an ingest that died: we hold the writer lock, so none is running.
        for tmp in self.path.glob("tmp-ingest-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        wal_dir = self.path / "wal"
        current = wal_dir / wal_mod.wal_name(self.wal_id)
        for p in wal_dir.iterdir():  # logs of a flush that crashed before or after its commit
            if p.name != current.name and p.name.startswith("wal-"):
                p.unlink()
        if not current.exists():
            raise CorruptionError(f"{current}: the current write-ahead log is missing; "
                                  "acknowledged writes may be lost", path=str(current))
        result = wal_mod.scan(current, expect_id=self.wal_id)
        if result.torn:
            # Never acknowledged (an acknowledged record is whole): cut it so appends continue
            # from a clean end.
            self._counters["torn_tail_bytes"] = result.size - result.end
            with open(current, "r+b") as fh:
                fh.truncate(result.end)
                os.fsync(fh.fileno())
        for payload in wal_mod.iter_payloads(result):
            self._counters["recovered_events"] += self._apply_payload(payload)
        self.wal_pos = result.end
        self.wal = wal_mod.WalWriter(current, self.settings["durability"],
                                     batch_interval=self.settings["batch_interval"])

    def _repair_files(self) -> None:
        """Cut unpublished tails and delete files no commit refers to (crash mid-flush)."""
        data = self.path / "data"
        for p in data.iterdir():
            parsed = parse_file_name(p.name)
            if parsed is None:
                continue
            _kind, fid = parsed
            info = self.catalog.get(fid)
            if info is None:
                p.unlink()
                continue
            size = p.stat().st_size
            if size > info["size"]:
                with open(p, "r+b") as fh:
                    fh.truncate(info["size"])
                    os.fsync(fh.fileno())
            elif size < info["size"]:
                raise CorruptionError(f"{p}: file has {size} bytes, the catalog published "
                                      f"{info['size']}; data was lost below SeqVault", path=str(p))
        for fid, info in self.catalog.items():
            if not (data / file_name(info["kind"], fid)).exists() and info["size"] > 0:
                raise CorruptionError(f"{data / file_name(info['kind'], fid)}: file in the catalog "
                                      "is missing", path=str(data))

    def _open_reader(self) -> None:
        self.meta = Meta(self.path / "meta", read_only=True)
        for attempt in range(20):
            with self.meta.begin() as txn:
                self._load_common(txn)
            self.mem.clear()
            self.wal_pos = wal_mod.FILE_HEADER_SIZE
            try:
                self._replay_reader_wal()
                break
            except FileNotFoundError:  # the writer rotated the log meanwhile: new snapshot
                time.sleep(0.001 * (attempt + 1))
        else:
            raise CorruptionError(f"{self.path}: could not get a consistent view after 20 tries")
        self._last_refresh = time.monotonic()

    # ================================================================== writes
    def _writable(self) -> None:
        if self._closed:
            raise StoreClosed(f"{self.path} is closed")
        if self.read_only:
            raise ReadOnlyError(f"{self.path} was opened read_only=True; writes need the writer")

    def append(self, user_id: Any, events: Mapping[str, Any]) -> int:
        """Append one user's events (columnar, any timestamp order). Atomic: all or nothing.
        Returns the number of events appended."""
        self._writable()
        key = coerce_user(self.schema, user_id)
        ts, cols = validate_events(self.schema, events)
        if ts.size == 0:
            return 0
        # Validation may hand back the caller's own arrays; the memtable must not alias them.
        ts = ts.copy()
        cols = {k: v.copy() for k, v in cols.items()}
        return self._append_grouped([key], [int(ts.size)], ts, cols)

    def append_batch(self, data: Any) -> int:
        """Append many users' events at once: a pyarrow Table/RecordBatch or a mapping of
        columns that includes the user column. Atomic: all or nothing."""
        self._writable()
        columns = _columns_of(data)
        ucol = self.schema.user_column
        if ucol not in columns:
            raise ValidationError(f"missing user column {ucol!r}; append_batch needs it",
                                  column=ucol)
        users = coerce_users(self.schema, columns[ucol])
        ts, cols = validate_events(self.schema, {k: v for k, v in columns.items() if k != ucol})
        if users.size != ts.size:
            raise ValidationError(f"column {ucol!r} has {users.size} values but "
                                  f"{self.schema.time_column!r} has {ts.size}", column=ucol)
        if ts.size == 0:
            return 0
        # Group rows by user, keeping each user's rows in call order (stable sort).
        order = np.argsort(users, kind="stable")
        grouped = users[order]
        bounds = np.flatnonzero(grouped[1:] != grouped[:-1]) + 1
        firsts = np.concatenate(([0], bounds))
        counts = np.diff(np.concatenate((firsts, [grouped.size])))
        keys: list[Any] = grouped[firsts].tolist()
        ts = ts[order]
        cols = {k: v[order] for k, v in cols.items()}
        return self._append_grouped(keys, counts.tolist(), ts, cols)

    def _append_grouped(self, keys: list[Any], counts: list[int], ts: np.ndarray,
                        cols: dict[str, np.ndarray]) -> int:
        payload = self._encode_payload(keys, counts, ts, cols)
        with self._lock:
            self._writable()
            for name, d in self.dicts.items():
                d.check_room(cols[name])
            wal = self.wal
            assert wal is not None
            end = wal.append(payload)
            self._apply(keys, counts, ts, cols)
            self._counters["appends"] += 1
            self._counters["appended_events"] += int(ts.size)
            need_flush = self._needs_flush()
        wal.commit(end)
        if need_flush:
            self.flush()
        if self._bg_merge is not None:
            self._bg_merge.throttle()  # waits only while merge is far behind (merge.py)
        return int(ts.size)

    def _needs_flush(self) -> bool:
        s = self.settings
        return (self.mem.events >= s["memtable_events"] or self.mem.max_tail >= s["tail_events"]
                or (self.wal is not None and self.wal.size >= s["wal_bytes"]))

    def _encode_payload(self, keys: list[Any], counts: list[int], ts: np.ndarray,
                        cols: dict[str, np.ndarray]) -> bytes:
        enc: dict[str, Any] = {}
        for c in self.schema.columns:
            arr = cols[c.name]
            enc[c.name] = arr.tolist() if c.is_string else arr.astype(
                c.dtype.newbyteorder("<"), copy=False).tobytes()
        return msgpack.packb({"v": self.schema.version, "k": keys, "n": counts,
                              "t": ts.astype("<i8", copy=False).tobytes(), "c": enc},
                             use_bin_type=True)

    def _apply_payload(self, payload: bytes) -> int:
        rec = msgpack.unpackb(payload, raw=False)
        ts = np.frombuffer(rec["t"], dtype="<i8").astype(np.int64)
        cols: dict[str, np.ndarray] = {}
        for c in self.schema.columns:
            raw = rec["c"].get(c.name)
            if raw is None:  # a column added after this record was written
                if c.is_string:
                    cols[c.name] = np.full(ts.size, c.default, dtype=object)
                else:
                    cols[c.name] = np.full(ts.size, c.default, dtype=c.dtype)
            elif c.is_string:
                cols[c.name] = np.array(raw, dtype=object)
            else:
                cols[c.name] = np.frombuffer(raw, dtype=c.dtype.newbyteorder("<")).astype(c.dtype)
        self._apply(rec["k"], rec["n"], ts, cols)
        return int(ts.size)

    def _apply(self, keys: Sequence[Any], counts: Sequence[int], ts: np.ndarray,
               cols: dict[str, np.ndarray]) -> None:
        """Add validated, user-grouped events to the memtable (string columns → codes)."""
        coded = {name: (self.dicts[name].encode(arr) if name in self.dicts else arr)
                 for name, arr in cols.items()}
        self.mem.add_grouped(keys, counts, ts, coded)

    # ================================================================== flush
    def flush(self) -> None:
        """Seal every user's in-memory events into real-time segments and start a new log."""
        self._writable()
        with self._lock:
            if self.mem.events == 0:
                return
            assert self.wal is not None
            new_wal_id = self.wal_id + 1
            new_wal = self.path / "wal" / wal_mod.wal_name(new_wal_id)
            wal_mod.create_wal(new_wal, new_wal_id)
            pieces: list[tuple[int, Any, list[bytes], list[tuple[int, int, int, int]]]] = []
            seg_max = int(self.settings["segment_events"])
            for key, ts, cols in self.mem.sorted_users():
                blobs, metas = [], []
                for lo in range(0, ts.size, seg_max):
                    hi = min(lo + seg_max, ts.size)
                    blobs.append(self._encode_user_segment(key, ts[lo:hi],
                                                           {k: v[lo:hi] for k, v in cols.items()}))
                    metas.append((hi - lo, int(ts[lo]), int(ts[hi - 1]), len(blobs[-1])))
                pieces.append((user_hash(key_bytes(key)[1]), key, blobs, metas))
            new_lists = self._write_extents("rt", pieces)
            self._publish(new_lists, new_wal_id=new_wal_id)
            old_wal = self.wal
            self.wal = wal_mod.WalWriter(new_wal, self.settings["durability"],
                                         batch_interval=self.settings["batch_interval"])
            old_wal.close()
            old_wal.path.unlink(missing_ok=True)
            self.mem.clear()
            self._counters["flushes"] += 1
            self._maybe_checkpoint()

    def _encode_user_segment(self, key: Any, ts: np.ndarray, cols: dict[str, np.ndarray]) -> bytes:
        level_default = int(self.settings["zstd_level"])
        return encode_segment(
            key, self.schema.version, ts,
            ((c.id, c.type, cols[c.name], c.level if c.level is not None else level_default)
             for c in self.schema.columns))

    def _write_extents(self, kind: str, pieces: Iterable[tuple[int, Any, list[bytes],
                                                               list[tuple[int, int, int, int]]]]
                       ) -> dict[int, list[Extent]]:
        """Append segments to `kind` files, fsync them, and return each user's new extent list
        (new extents first, then the old ones). Nothing is published yet."""
        new_lists: dict[int, list[Extent]] = {}
        touched: set[int] = set()
        for h, _key, blobs, metas in pieces:
            fresh: list[Extent] = []
            for blob, (count, mn, mx, length) in zip(blobs, metas):
                app = self._appender(kind, len(blob))
                off = app.append(blob)
                touched.add(app.file_id)
                fresh.append(Extent(app.file_id, off, length, count, mn, mx))
            old = new_lists.get(h)
            if old is None:
                old = self.index.extents_of(h)
            new_lists[h] = list(reversed(fresh)) + old
        for app in self._appenders.values():
            if app.file_id in touched:
                app.sync()
        if getattr(self, "_new_files", False):
            wal_mod.fsync_dir(self.path / "data")
            self._new_files = False
        return new_lists

    def _appender(self, kind: str, need: int) -> FileAppender:
        app = self._appenders.get(kind)
        if app is not None and app.size + need > self.settings["max_file_bytes"] and app.size > 0:
            app.sync()
            app.close()
            app = None
        if app is None:
            # Reuse the newest file of this kind while it has room (a reopened store).
            candidates = [fid for fid, info in self.catalog.items()
                          if info["kind"] == kind and not info.get("sealed")]
            fid = max(candidates) if candidates else None
            if fid is None or self.catalog[fid]["size"] + need > self.settings["max_file_bytes"]:
                fid = self._new_file_id(kind)
            app = FileAppender(self.path / "data" / file_name(kind, fid), fid, kind)
            self._appenders[kind] = app
        return app

    def _new_file_id(self, kind: str) -> int:
        # Ids are never reused: a reader may still hold a deleted file's id.
        with self.meta.begin() as txn:
            fid = max(max(self.catalog, default=0) + 1,
                      int(self.meta.get_meta(txn, "next_file_id", 1)))
        self.catalog[fid] = {"kind": kind, "size": 0, "created_ns": time.time_ns()}
        self.files.register(fid, kind)
        self._new_files = True  # the directory entry is fsynced before publishing
        return fid

    def _publish(self, new_lists: dict[int, list[Extent]], *, new_wal_id: int | None = None,
                 extra: Any = None) -> None:
        """One LMDB transaction: new file sizes, index deltas, dictionary entries, log id."""
        seq = self.seq + 1
        sizes = {app.file_id: app.size for app in self._appenders.values()}
        with self.meta.begin(write=True) as txn:
            for fid, size in sizes.items():
                info = self.catalog.get(fid, {})
                record = {"kind": info.get("kind", "rt"), "size": size,
                          "created_ns": info.get("created_ns", time.time_ns())}
                self.meta.put(txn, "files", fid.to_bytes(4, "big"), pack(record))
            self.meta.set_meta(txn, "next_file_id", max(  # never decreases: ids are not reused
                max(self.catalog, default=0) + 1,
                int(self.meta.get_meta(txn, "next_file_id", 1) or 1)))
            for h, extents in new_lists.items():
                self.meta.put(txn, "delta", delta_key(seq, h), pack_extents(extents))
            for name, d in self.dicts.items():
                col_id = self.schema.column(name).id
                for code, s in d.pending():
                    self.meta.put(txn, "dicts", dict_key(col_id, code), s.encode("utf-8"))
            if new_wal_id is not None:
                self.meta.set_meta(txn, "wal_id", new_wal_id)
            self.meta.set_meta(txn, "seq", seq)
            if extra is not None:
                extra(txn)
        # Committed: now make the in-memory state match.
        self.seq = seq
        for fid, size in sizes.items():
            self.catalog.setdefault(fid, {"kind": "rt"})["size"] = size
        for h, extents in new_lists.items():
            self.index.set_extents(h, extents)
        for d in self.dicts.values():
            d.persisted = len(d.values)
        if new_wal_id is not None:
            self.wal_id = new_wal_id
        self._deltas_since_ckpt += len(new_lists)

    def _maybe_checkpoint(self, force: bool = False) -> None:
        pending = self._deltas_since_ckpt
        if pending == 0 or (not force and pending < self.settings["checkpoint_deltas"]):
            return
        self.checkpoint()

    def checkpoint(self) -> None:
        """Write the whole DRAM index to LMDB and drop the deltas it covers (faster opens)."""
        self._writable()
        with self._lock:
            blob = self.index.to_bytes()
            with self.meta.begin(write=True) as txn:
                self.meta.put(txn, "ckpt", b"index", blob)
                self.meta.set_meta(txn, "ckpt_seq", self.seq)
                cur = txn.cursor(db=self.meta.dbs["delta"])
                end = delta_key(self.seq + 1, 0)
                ok = cur.first()
                while ok and bytes(cur.key()) < end:
                    ok = cur.delete()
            self.ckpt_seq = self.seq
            self._deltas_since_ckpt = 0
            self._counters["checkpoints"] += 1

    # ================================================================== lifetime merge
    def merge(self, users: Iterable[Any] | None = None, *, reclaim: bool = True,
              reclaim_ratio: float | None = None) -> dict[str, Any]:
        """Fold real-time segments (and small lifetime ones) into lifetime segments of
        `lifetime_segment_events`, sorted by timestamp (ties keep arrival order); apply the
        schema's retention; with `reclaim`, rewrite the live extents of files whose live ratio
        is below `reclaim_ratio` and delete files nothing refers to any more.

        `reclaim_ratio` overrides the setting for this call (e.g. 0.9: compact to ≤10% garbage).
        The pass runs in a worker thread at CPU niceness `merge_nice` (the caller waits), so
        reads in this and other processes are scheduled first.
        `users`: only these users (default: every user with work to do). Never blocks readers;
        appends wait only for the short publish of each batch. Crash-safe at every step
        (docs/design/merge.md). Returns a JSON-able summary (users, events, bytes, retention
        drops, files reclaimed, seconds, events_per_s). Raises CorruptionError naming the file
        and the user if a segment to merge fails its checksums (nothing of that batch is
        published).
        """
        self._writable()
        return self._get_merger().run(users, reclaim=reclaim, reclaim_ratio=reclaim_ratio,
                                      niced=True)

    def _get_merger(self) -> Merger:
        if self._merger is None:
            self._merger = Merger(self)
        return self._merger

    def bulk_writer(self, **kwargs: Any) -> BulkWriter:
        """A writer of lifetime segments published in one transaction (ingest, merge)."""
        return BulkWriter(self, **kwargs)

    def sync(self) -> None:
        """Make every acknowledged append durable now (fsync the log)."""
        self._writable()
        if self.wal is not None:
            self.wal.sync()

    # ================================================================== schema
    def evolve_schema(self, new: Schema | str | os.PathLike[str]) -> Schema:
        """Adopt `new` if it only adds columns (with defaults) or changes retention."""
        self._writable()
        if not isinstance(new, Schema):
            new = Schema.load(new)
        with self._lock:
            evolved = self.schema.evolve_to(new)
            if evolved is self.schema:
                return self.schema
            self.flush()  # log records then all carry the current schema version
            with self.meta.begin(write=True) as txn:
                self.meta.put(txn, "schemas", u32(evolved.version), evolved.to_json().encode())
                self.meta.set_meta(txn, "schema_version", evolved.version)
                self.meta.set_meta(txn, "seq", self.seq + 1)
            self.seq += 1
            self.schema = evolved
            for c in evolved.columns:
                if c.is_string and c.name not in self.dicts:
                    self.dicts[c.name] = StringDict(c.name)
            return evolved

    def schema_history(self) -> list[Schema]:
        with self.meta.begin() as txn:
            return [Schema.from_json(v) for _k, v in self.meta.items(txn, "schemas")]

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
        if strings not in ("decode", "codes"):
            raise ValidationError(f"strings: {strings!r} is not 'decode' or 'codes'",
                                  column="strings", value=strings)
        if self._closed:
            raise StoreClosed(f"{self.path} is closed")
        if self.read_only:
            self._maybe_refresh()
        key = coerce_user(self.schema, user_id)
        names = self._check_read_args(last, columns, before, since)
        # Retention keeps the newest max_events (of those not older than max_age) whatever
        # `before` asks: with `before`, find that window first (`keep`), as merge would.
        keep = self.schema.retention.max_events if before is not None else None
        last, since = self._apply_retention(last, since)
        kb = key_bytes(key)[1]
        self._counters["reads"] += 1
        for _attempt in range(20):
            with self._lock:
                schema = self.schema
                sources = [Source(i, e.count, e.min_ts, e.max_ts, extent=e) for i, e in
                           enumerate(reversed(self.index.extents_of(user_hash(kb))))]
                tail = self.mem.get(key)
                if tail is not None and tail.count:
                    ts_m, cols_m = tail.arrays()
                    sources.append(Source(len(sources), int(ts_m.size), int(ts_m.min()),
                                           int(ts_m.max()), mem=(ts_m, cols_m)))
                dicts = dict(self.dicts)
            if keep is not None:
                chosen = choose_sources(sources, keep, None, since)
            else:
                chosen = choose_sources(sources, last, before, since)
            try:
                return self._assemble(key, kb, schema, dicts, chosen, names, last, before,
                                      since, keep=keep, codes=strings == "codes")
            except FileNotFoundError:
                # Space reclamation deleted a file of this snapshot (docs/design/merge.md,
                # "Deleting files"): a newer snapshot no longer refers to it.
                if self.read_only:
                    self.refresh()
        raise CorruptionError(f"{self.path}: user {key!r}: extent files kept disappearing "
                              "under 20 consecutive snapshots")

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

    def _check_read_args(self, last: Any, columns: Any, before: Any, since: Any) -> list[str]:
        if last is not None and (isinstance(last, bool) or not isinstance(last, int | np.integer)
                                 or last <= 0):
            raise ValidationError(f"last: {last!r} must be a positive integer", column="last",
                                  value=last)
        for name, v in (("before", before), ("since", since)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer)):
                raise ValidationError(f"{name}: {v!r} must be an integer timestamp in "
                                      f"{self.schema.time_unit}", column=name, value=v)
        all_names = self.schema.column_names
        if columns is None:
            return all_names
        if isinstance(columns, str):
            columns = [columns]
        unknown = [c for c in columns if c not in all_names]
        if unknown:
            raise ValidationError(f"columns: unknown column(s) {unknown}; the schema has "
                                  f"{all_names}", column=unknown[0])
        return list(dict.fromkeys(columns))

    def _apply_retention(self, last: int | None, since: int | None) -> tuple[int | None, int | None]:
        r = self.schema.retention
        if r.max_events is not None:
            last = r.max_events if last is None else min(int(last), r.max_events)
        if r.max_age is not None:
            cutoff = int((time.time() - r.max_age) * TIME_UNITS[self.schema.time_unit])
            since = cutoff if since is None else max(int(since), cutoff)
        return last, since

    def _decode_source(self, src: Source, kb: bytes, key: Any, col_ids: list[int]
                       ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        assert src.extent is not None
        return decode_extent(self.files, src.extent, kb, key, col_ids)

    def _assemble(self, key: Any, kb: bytes, schema: Schema, dicts: dict[str, StringDict],
                  chosen: list[Source], names: list[str], last: int | None,
                  before: int | None, since: int | None, keep: int | None = None,
                  codes: bool = False) -> UserSequence:
        ids = [schema.column(n).id for n in names if n != schema.time_column]
        return assemble(lambda src: self._decode_source(src, kb, key, ids), key, schema, dicts,
                        chosen, names, last, before, since, keep, codes)

    # ================================================================== read-only refresh
    def _maybe_refresh(self) -> None:
        if time.monotonic() - self._last_refresh >= self.settings["refresh_interval"]:
            self.refresh()

    def refresh(self) -> None:
        """Read-only opens: pick up the writer's newest commits and log records now."""
        if not self.read_only:
            return
        for attempt in range(20):
            try:
                with self._lock:
                    self._refresh_once()
                self._last_refresh = time.monotonic()
                return
            except FileNotFoundError:
                # The writer rotated the log (or deleted a file) between our metadata snapshot
                # and the file read; take a new snapshot.
                time.sleep(0.001 * (attempt + 1))
        raise CorruptionError(f"{self.path}: could not get a consistent view after 20 tries")

    def _refresh_once(self) -> None:
        old_wal = self.wal_id
        with self.meta.begin() as txn:
            seq = int(self.meta.get_meta(txn, "seq"))
            wal_id = int(self.meta.get_meta(txn, "wal_id"))
            if seq != self.seq:
                ckpt_seq = int(self.meta.get_meta(txn, "ckpt_seq"))
                version = self.meta.get_meta(txn, "schema_version")
                if version != self.schema.version or ckpt_seq > self.seq:
                    self._load_common(txn)
                else:
                    for k, v in self.meta.items(txn, "delta", delta_key(self.seq + 1, 0)):
                        _s, h = parse_delta_key(k)
                        self.index.set_extents(h, unpack_extents(v))
                    catalog: dict[int, dict[str, Any]] = {}
                    for k, v in self.meta.items(txn, "files"):
                        fid = int.from_bytes(k, "big")
                        info = unpack(v)
                        catalog[fid] = info
                        self.files.register(fid, info["kind"])
                    self.catalog = catalog
                    self.files.retire_missing(catalog)  # dropped by space reclamation
                    self.seq = seq
                    if wal_id != self.wal_id:
                        self._load_dicts(txn)
            if wal_id != old_wal:
                self.wal_id = wal_id
                self.mem.clear()
                self.wal_pos = wal_mod.FILE_HEADER_SIZE
        self._replay_reader_wal()

    def _replay_reader_wal(self) -> None:
        path = self.path / "wal" / wal_mod.wal_name(self.wal_id)
        if not path.exists():
            raise FileNotFoundError(path)
        if path.stat().st_size <= self.wal_pos:
            return
        result = wal_mod.scan(path, self.wal_pos,
                              expect_id=self.wal_id if self.wal_pos == wal_mod.FILE_HEADER_SIZE
                              else None)
        for payload in wal_mod.iter_payloads(result):
            self._apply_payload(payload)
        self.wal_pos = result.end

    # ================================================================== info / close
    def users(self) -> Iterator[Any]:
        """Every user key in the store (sealed and in memory), in no particular order."""
        with self._lock:
            heads = [int(self.index.u_head[r]) for r in self.index.rows()]
            mem_keys = list(self.mem.users)
        seen = set(mem_keys)
        yield from mem_keys
        for head in heads:
            if head < 0:
                continue
            f, o = int(self.index.e_file[head]), int(self.index.e_off[head])
            ln = int(self.index.e_len[head])
            header = parse_header(self.files.pread(f, o, ln), where=f"{self.files.path(f)} @ {o}")
            key = key_from_bytes(header.key_type, header.key)
            if key not in seen:
                yield key

    def stats(self) -> dict[str, Any]:
        """Counts and sizes (JSON-able)."""
        with self._lock:
            files = {"rt": 0, "lt": 0}
            data_bytes = 0
            for info in self.catalog.values():
                files[info["kind"]] = files.get(info["kind"], 0) + 1
                data_bytes += int(info["size"])
            n_users_sealed = len(self.index)
            mem_only = sum(1 for k in self.mem.users
                           if self.index.find(user_hash(key_bytes(k)[1])) < 0)
            wal_bytes = sum(p.stat().st_size for p in (self.path / "wal").iterdir())
            meta_bytes = sum(p.stat().st_size for p in (self.path / "meta").iterdir())
            return {
                "path": str(self.path),
                "read_only": self.read_only,
                "schema_version": self.schema.version,
                "users": n_users_sealed + mem_only,
                "events": self.index.total_events + self.mem.events,
                "sealed_events": self.index.total_events,
                "memtable_events": self.mem.events,
                "segments": self.index.live_extents,
                "files": files,
                "data_bytes": data_bytes,
                "wal_bytes": wal_bytes,
                "meta_bytes": meta_bytes,
                "disk_bytes": data_bytes + wal_bytes + meta_bytes,
                "index_bytes": self.index.nbytes,
                "index_bytes_per_user": (self.index.nbytes / n_users_sealed) if n_users_sealed else 0.0,
                "commit_seq": self.seq,
                "durability": self.settings["durability"],
                "retention": self.schema.retention.to_dict(),
                "wal_fsyncs": self.wal.fsyncs if self.wal is not None else 0,
                **self._counters,
                **merge_stats(self),
            }

    def close(self, *, flush: bool = True) -> None:
        """Seal the memtable (optional), checkpoint the index, release the writer lock."""
        if self._closed:
            return
        try:
            if not self.read_only:
                if self._bg_merge is not None:
                    self._bg_merge.stop()  # finishes the batch in flight, outside the lock
                with self._lock:
                    if flush:
                        self.flush()
                        self._maybe_checkpoint(force=True)
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        if self.wal is not None:
            try:
                self.wal.close()
            finally:
                self.wal = None
        for app in self._appenders.values():
            app.close()
        self._appenders.clear()
        if self._merger is not None:
            self._merger.close()
        if getattr(self, "files", None) is not None:
            self.files.close()
        if getattr(self, "meta", None) is not None:
            self.meta.close()
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


def _created(path: Path) -> bool:
    """Whether the store's creating transaction committed. A process killed while creating a
    store leaves metadata without a format version: that store does not exist yet, and the next
    writer open with a schema creates it (nothing was ever acknowledged in it)."""
    if not (path / "meta" / "data.mdb").exists():
        return False
    meta = Meta(path / "meta", read_only=True)
    try:
        with meta.begin() as txn:
            return meta.get_meta(txn, "format_version") is not None
    finally:
        meta.close()


def _columns_of(data: Any) -> Mapping[str, Any]:
    if hasattr(data, "column_names") and hasattr(data, "column"):  # pyarrow Table / RecordBatch
        return {name: data.column(name) for name in data.column_names}
    if isinstance(data, Mapping):
        return data
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas DataFrame
        return {str(c): data[c].to_numpy() for c in data.columns}
    raise ValidationError(f"append_batch: expected a pyarrow Table, a RecordBatch or a mapping of "
                          f"columns, got {type(data).__name__}")
