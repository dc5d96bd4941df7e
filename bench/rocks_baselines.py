"""The two RocksDB "LastN" stores SeqVault replaces, tuned as a competent engineer would.

Both use rocksdict in raw mode (byte keys and values, no pickling), zstd on every level, a
256 MiB LRU block cache, 10-bit bloom filters, index/filter blocks in the cache, and the same
durability as the SeqVault run they are compared with: ``sync`` -> ``WriteOptions.sync = True``
(every acknowledged write fsynced); ``batch`` -> WAL without sync plus a background thread that,
after a write, waits 5 ms and fsyncs the WAL (``FlushWAL(sync=true)``), exactly SeqVault's
``batch`` mode (RocksDB has no such mode built in; this is how one gets it); ``none`` -> WAL
without sync.

1. ``rocks_blob``: one key per user (8-byte big-endian id) holding the newest ``cap`` events as a
   msgpack list of rows ``[ts, item_id, action, category, dwell_ms, scenario]`` in time order;
   an append is read-modify-write: get, unpack, extend, re-sort if a late event arrived, trim, put.
2. ``rocks_event``: one key per event, ``user (8 B) | ts (8 B) | seq (8 B)``, all big-endian
   with the sign bit flipped so byte order is numeric order; ``seq`` is a writer-wide counter that
   keeps equal timestamps in arrival order. The value is the other five columns as one packed
   18-byte record. The last N are read by a reverse scan bounded to the user's prefix, helped by
   an 8-byte prefix extractor (prefix bloom filters).
"""

from __future__ import annotations

import os
import threading
import time
from operator import itemgetter

import msgpack
import numpy as np
from rocksdict import (
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    SliceTransform,
    WriteBatch,
    WriteOptions,
)

from bench.workload import COLUMN_DTYPES, EVENT_COLUMNS, USER_COLUMN

_SIGN = np.uint64(1 << 63)
_KEY_DTYPE = np.dtype([("user", ">u8"), ("ts", ">u8"), ("seq", ">u8")])
_VALUE_COLUMNS = tuple(c for c in EVENT_COLUMNS if c != "ts")
_VALUE_DTYPE = np.dtype([(c, COLUMN_DTYPES[c].newbyteorder("<")) for c in _VALUE_COLUMNS])
_KEY_LEN = _KEY_DTYPE.itemsize
_VALUE_LEN = _VALUE_DTYPE.itemsize
_MAX_SUFFIX = b"\xff" * (_KEY_LEN - 8)


def _user_key(user: int) -> bytes:
    # Adding 2**63 is the sign-bit flip of the numpy key path: int64 order becomes byte order.
    return (int(user) + (1 << 63)).to_bytes(8, "big")


def _options(prefix_len: int | None) -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_compression_type(DBCompressionType.zstd())
    opts.set_bottommost_compression_type(DBCompressionType.zstd())
    # Two cores on the benchmark machine: two background jobs (flush + compaction).
    opts.increase_parallelism(2)
    opts.set_max_background_jobs(2)
    opts.set_write_buffer_size(64 << 20)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(256 << 20))
    table.set_bloom_filter(10, False)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    table.set_block_size(16 << 10)
    opts.set_block_based_table_factory(table)
    if prefix_len:
        opts.set_prefix_extractor(SliceTransform.create_fixed_prefix(prefix_len))
        opts.set_memtable_prefix_bloom_ratio(0.1)
    return opts


def dir_bytes(path: str) -> int:
    """Bytes allocated on disk under ``path`` (sparse files count what they really use)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            total += min(st.st_size, st.st_blocks * 512)
    return total


class _WalSyncer:
    """Durability ``batch`` for RocksDB: once a write has happened, wait ``interval`` and fsync
    the WAL, so an acknowledged write is durable within a few ms, as in SeqVault's ``batch``.
    rocksdict releases the GIL during ``flush_wal``, so the fsync does not stall the writer."""

    def __init__(self, db: Rdict, interval: float = 0.005) -> None:
        self.db, self.interval = db, interval
        self.wake = threading.Event()
        self.closed = False
        self.fsyncs = 0
        self.thread = threading.Thread(target=self._loop, name="wal-syncer", daemon=True)
        self.thread.start()

    def poke(self) -> None:
        self.wake.set()

    def _loop(self) -> None:
        while not self.closed:
            self.wake.wait()
            self.wake.clear()
            if self.closed:
                break
            time.sleep(self.interval)
            self.db.flush_wal(True)
            self.fsyncs += 1

    def close(self) -> None:
        self.closed = True
        self.wake.set()
        self.thread.join(timeout=5)
        self.db.flush_wal(True)


class _RocksStore:
    name = "rocks"
    prefix_len: int | None = None

    def __init__(self, path: str, durability: str, cap: int = 10_000) -> None:
        self.path = path
        self.cap = cap
        self.durability = durability
        self.db = Rdict(path, _options(self.prefix_len))
        self.write_opts = WriteOptions()
        self.write_opts.sync = durability == "sync"
        self.db.set_write_options(self.write_opts)
        self.syncer = _WalSyncer(self.db) if durability == "batch" else None
        # Events the store holds after the load; the blob layout keeps only the newest ``cap``,
        # so its bytes per event are per *stored* event.
        self.stored_events = 0

    def quiesce(self) -> None:
        """Flush memtables and compact everything: the steady state reads are measured in."""
        self.db.flush(True)
        self.db.compact_range(None, None)

    def flush(self) -> None:
        """Write the memtable out (SeqVault's ``flush``: seal what is in memory)."""
        self.db.flush(True)

    def merge(self) -> None:
        """A full manual compaction: RocksDB's counterpart of SeqVault's ``merge``."""
        self.db.compact_range(None, None)

    def maintenance(self):
        """Background work for the "reads during merge" workload: a full manual compaction,
        RocksDB's counterpart of a lifetime merge."""
        return lambda: self.db.compact_range(None, None)

    def disk_bytes(self) -> int:
        return dir_bytes(self.path)

    def stats(self) -> dict:
        fsyncs = self.syncer.fsyncs if self.syncer is not None else 0
        return {"index_bytes_per_user": None, "raw": {"wal_fsyncs": fsyncs}}

    def _write(self, batch: WriteBatch) -> None:
        """One acknowledged write at this store's durability."""
        self.db.write(batch)
        if self.syncer is not None:
            self.syncer.poke()

    def close(self) -> None:
        if self.syncer is not None:
            self.syncer.close()
        self.db.close()


class RocksBlobStore(_RocksStore):
    """Baseline 1: one msgpack blob of the newest ``cap`` events per user."""

    name = "rocks_blob"

    @staticmethod
    def _rows(cols: dict) -> list:
        return np.column_stack([cols[c].astype(np.int64) for c in EVENT_COLUMNS]).tolist()

    def load(self, histories) -> int:
        n = 0
        batch, pending = WriteBatch(raw_mode=True), 0
        for user, cols in histories:
            order = np.argsort(cols["ts"], kind="stable")[-self.cap :]
            rows = self._rows({k: v[order] for k, v in cols.items()})
            batch.put(_user_key(user), msgpack.packb(rows))
            n += len(cols["ts"])
            self.stored_events += len(rows)
            pending += len(rows)
            if pending >= 200_000:
                self._write(batch)
                batch, pending = WriteBatch(raw_mode=True), 0
        self._write(batch)
        return n

    def append_events(self, cols: dict) -> None:
        users = cols[USER_COLUMN].tolist()
        rows = self._rows(cols)
        by_user: dict[int, list] = {}
        for user, row in zip(users, rows, strict=True):
            by_user.setdefault(user, []).append(row)
        batch = WriteBatch(raw_mode=True)
        for user, new in by_user.items():
            key = _user_key(user)
            old = self.db.get(key)
            seq = msgpack.unpackb(old) if old is not None else []
            late = seq and min(r[0] for r in new) < seq[-1][0]
            unsorted = any(new[i][0] > new[i + 1][0] for i in range(len(new) - 1))
            seq.extend(new)
            if late or unsorted:
                seq.sort(key=itemgetter(0))  # stable: ties keep arrival order
            if len(seq) > self.cap:
                del seq[: len(seq) - self.cap]
            batch.put(key, msgpack.packb(seq))
        self._write(batch)

    def read_last(self, user: int, n: int) -> dict[str, np.ndarray]:
        raw = self.db.get(_user_key(user))
        rows = msgpack.unpackb(raw, use_list=False)[-n:] if raw is not None else ()
        arr = np.array(rows, dtype=np.int64).reshape(-1, len(EVENT_COLUMNS))
        return {c: arr[:, i].astype(COLUMN_DTYPES[c]) for i, c in enumerate(EVENT_COLUMNS)}


class RocksEventStore(_RocksStore):
    """Baseline 2: one key per event, reverse prefix scan for the last N."""

    name = "rocks_event"
    prefix_len = 8

    def __init__(self, path: str, durability: str, cap: int = 10_000) -> None:
        super().__init__(path, durability, cap)
        self.seq = 0
        self._read_opts = ReadOptions()

    def _encode(self, users: np.ndarray, cols: dict) -> tuple[bytes, bytes, int]:
        n = len(users)
        keys = np.empty(n, dtype=_KEY_DTYPE)
        keys["user"] = users.astype(np.int64).view(np.uint64) ^ _SIGN
        keys["ts"] = cols["ts"].astype(np.int64).view(np.uint64) ^ _SIGN
        keys["seq"] = np.arange(self.seq, self.seq + n, dtype=np.uint64)
        self.seq += n
        values = np.empty(n, dtype=_VALUE_DTYPE)
        for c in _VALUE_COLUMNS:
            values[c] = cols[c]
        return keys.tobytes(), values.tobytes(), n

    def _put_all(self, batch: WriteBatch, kb: bytes, vb: bytes, n: int) -> None:
        put = batch.put
        for i in range(n):
            put(kb[i * _KEY_LEN : (i + 1) * _KEY_LEN], vb[i * _VALUE_LEN : (i + 1) * _VALUE_LEN])

    def load(self, histories) -> int:
        n_total = 0
        batch, pending = WriteBatch(raw_mode=True), 0
        for user, cols in histories:
            n = len(cols["ts"])
            kb, vb, _ = self._encode(np.full(n, user, dtype=np.int64), cols)
            self._put_all(batch, kb, vb, n)
            n_total += n
            self.stored_events += n
            pending += n
            if pending >= 100_000:
                self._write(batch)
                batch, pending = WriteBatch(raw_mode=True), 0
        self._write(batch)
        return n_total

    def append_events(self, cols: dict) -> None:
        kb, vb, n = self._encode(cols[USER_COLUMN], cols)
        batch = WriteBatch(raw_mode=True)
        self._put_all(batch, kb, vb, n)
        self._write(batch)

    def read_last(self, user: int, n: int) -> dict[str, np.ndarray]:
        prefix = _user_key(user)
        # rocksdict's ReadOptions encodes iterate bounds in its non-raw key format, so bounds are
        # unusable on a raw-mode store: seek to the user's last possible key instead and stop
        # at the first key of another user. SeekForPrev still uses the prefix bloom filter.
        it = self.db.iter(self._read_opts)
        it.seek_for_prev(prefix + _MAX_SUFFIX)
        keys, values = [], []
        while len(keys) < n and it.valid():
            key = it.key()
            if key[:8] != prefix:
                break
            keys.append(key)
            values.append(it.value())
            it.prev()
        keys.reverse()
        values.reverse()
        k = np.frombuffer(b"".join(keys), dtype=_KEY_DTYPE)
        v = np.frombuffer(b"".join(values), dtype=_VALUE_DTYPE)
        out = {"ts": (k["ts"].astype(np.uint64) ^ _SIGN).view(np.int64)}
        for c in _VALUE_COLUMNS:
            out[c] = v[c].astype(COLUMN_DTYPES[c])
        return out
