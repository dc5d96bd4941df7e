"""The LMDB environment and its named databases: settings, schema versions, file catalog,
index deltas, string dictionaries, the ingest ledger. Only `manifest.Manifest` writes to it.

LMDB gives us atomic multi-key commits and crash consistency without a hand-rolled B-tree: a
flush publishes new extents, the index delta, the dictionary entries and the new log file in
one transaction, so a crash leaves either the whole flush or none of it
(docs/format/manifest.md).
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from .errors import CorruptionError

MAP_SIZE = 1 << 40  # virtual address space only; the file grows as needed
DB_NAMES = ("meta", "schemas", "files", "ckpt", "delta", "dicts", "ledger", "readers", "sealed")

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_DELTA_KEY = struct.Struct(">QQ")
_DICT_KEY = struct.Struct(">HI")


def u32(n: int) -> bytes:
    return _U32.pack(n)


def delta_key(seq: int, h: int) -> bytes:
    return _DELTA_KEY.pack(seq, h)


def parse_delta_key(k: bytes) -> tuple[int, int]:
    seq, h = _DELTA_KEY.unpack(k)
    return int(seq), int(h)


def dict_key(col_id: int, code: int) -> bytes:
    return _DICT_KEY.pack(col_id, code)


_SEALED_KEY = struct.Struct(">IQQ")


def sealed_key(wal_id: int, seq: int, h: int) -> bytes:
    """Key of a "sealed through" record: log id, commit seq, user hash (all big-endian)."""
    return _SEALED_KEY.pack(wal_id, seq, h)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(raw: bytes | memoryview | None) -> Any:
    if raw is None:
        return None
    return msgpack.unpackb(bytes(raw), raw=False, strict_map_key=False)


# LMDB forbids opening one environment twice in a process, but a process may hold a writer and
# read-only opens of the same store (tests, an HTTP server with writes on). So environments are
# shared per path with a reference count. They are always opened read-write at the LMDB level;
# a read-only SeqVault simply never starts a write transaction.
_ENVS: dict[str, tuple[Any, dict[str, Any], int]] = {}
_ENVS_LOCK = threading.Lock()


def _open_db(env: Any, name: str, read_only_env: bool) -> Any:
    """A named database; None when a read-only environment lacks it (it cannot be created)."""
    try:
        return env.open_db(name.encode())
    except lmdb.ReadonlyError:
        if not read_only_env:
            raise
        return None


class Meta:
    """Thin wrapper over the LMDB environment and its named databases."""

    def __init__(self, path: Path, *, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        if read_only and not (path / "data.mdb").exists():
            from .errors import NotFound

            raise NotFound(f"{path.parent} is not a SeqVault store (no metadata)")
        self._key = os.path.realpath(path)
        with _ENVS_LOCK:
            entry = _ENVS.get(self._key)
            if entry is None:
                # A store on a read-only filesystem (a snapshot, a read-only mount): only there
                # is the environment opened read-only at the LMDB level, which then skips its
                # lock file (nobody can write there, so there is no writer to coordinate with).
                ro_fs = read_only and bool(os.statvfs(path).f_flag & os.ST_RDONLY)
                try:
                    env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=len(DB_NAMES) + 2,
                                    subdir=True, lock=True, sync=True, metasync=True,
                                    max_readers=1024, create=not read_only, readonly=ro_fs)
                except lmdb.ReadonlyError as exc:  # EACCES: a permission problem, not damage
                    raise PermissionError(errno.EACCES, "Permission denied (opening a store, "
                                          "even to read, needs write access to meta/lock.mdb,"
                                          " LMDB's table of readers)", str(path)) from exc
                except lmdb.Error as exc:
                    raise CorruptionError(f"{path}: cannot open metadata: {exc}",
                                          path=str(path)) from exc
                dbs = {name: _open_db(env, name, ro_fs) for name in DB_NAMES}
                entry = (env, dbs, 0)
            env, dbs, refs = entry
            _ENVS[self._key] = (env, dbs, refs + 1)
        self.env = env
        self.dbs: dict[str, Any] = dbs
        self._open = True

    def begin(self, write: bool = False) -> lmdb.Transaction:
        return self.env.begin(write=write, buffers=False)

    # -------------------------------------------------------------- helpers within a txn
    def get(self, txn: lmdb.Transaction, db: str, key: bytes) -> bytes | None:
        handle = self.dbs[db]
        if handle is None:
            return None
        value = txn.get(key, db=handle)
        return None if value is None else bytes(value)

    def put(self, txn: lmdb.Transaction, db: str, key: bytes, value: bytes, *,
            append: bool = False) -> None:
        """`append`: the key is above every key in `db` (LMDB then fills pages whole instead
        of splitting them in half)."""
        txn.put(key, value, db=self.dbs[db], append=append)

    def put_many(self, txn: lmdb.Transaction, db: str, items: list[tuple[bytes, bytes]], *,
                 append: bool = False) -> None:
        """`put` of every (key, value), in LMDB's own loop (a flush writes thousands)."""
        if items:
            with txn.cursor(db=self.dbs[db]) as cur:
                cur.putmulti(items, append=append)

    def delete(self, txn: lmdb.Transaction, db: str, key: bytes) -> None:
        txn.delete(key, db=self.dbs[db])

    def get_meta(self, txn: lmdb.Transaction, key: str, default: Any = None) -> Any:
        raw = self.get(txn, "meta", key.encode())
        return default if raw is None else unpack(raw)

    def set_meta(self, txn: lmdb.Transaction, key: str, value: Any) -> None:
        self.put(txn, "meta", key.encode(), pack(value))

    def items(self, txn: lmdb.Transaction, db: str, start: bytes | None = None
              ) -> Iterator[tuple[bytes, bytes]]:
        handle = self.dbs[db]
        if handle is None:
            return
        cur = txn.cursor(db=handle)
        ok = cur.set_range(start) if start is not None else cur.first()
        while ok:
            yield bytes(cur.key()), bytes(cur.value())
            ok = cur.next()

    def delete_range(self, txn: lmdb.Transaction, db: str, end: bytes) -> None:
        """Delete every key of `db` below `end`."""
        handle = self.dbs[db]
        cur = txn.cursor(db=handle)
        if cur.last() and bytes(cur.key()) < end:
            # Every key goes (a checkpoint covering every delta, a rotation dropping every
            # sealed record): empty the database in one step instead of a delete per key
            # (~1 us each: 0.4 s for the deltas of a 200,000-user flush).
            txn.drop(handle, delete=False)
            return
        ok = cur.first()
        while ok and bytes(cur.key()) < end:
            ok = cur.delete()

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        with _ENVS_LOCK:
            env, dbs, refs = _ENVS[self._key]
            if refs <= 1:
                del _ENVS[self._key]
                env.close()
            else:
                _ENVS[self._key] = (env, dbs, refs - 1)
