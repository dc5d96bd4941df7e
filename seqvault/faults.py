"""Fault points for crash tests: a process told so through the environment SIGKILLs itself
when it passes a named point, so tests can kill a writer at exact steps of a protocol
(docs/design/merge.md lists the points and what each proves). And I/O fault injection:
`armed(op, nth, errno)` makes the Nth write/fsync/rename/... of the engine fail
(seqvault/iofaults.py; docs/design/safety.md, section 9)."""

from __future__ import annotations

import errno
import inspect
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

FAULT_ENV = "SEQVAULT_FAULT"
FAULT_POINTS = (  # merge and reclamation (docs/design/merge.md)
    "merge:after_snapshot",  # extent lists snapshotted, nothing written
    "merge:after_write",  # new segments written to the lt file, not fsynced
    "merge:after_sync",  # lt file fsynced, nothing published
    "merge:after_commit",  # batch published (LMDB committed)
    "reclaim:after_drop_commit",  # dead files dropped from the catalog, not yet unlinked
    "reclaim:after_unlink",  # dead files unlinked
)
SEAL_FAULT_POINTS = (  # a partial seal (docs/design/realtime.md)
    "seal:after_write",  # one user's tail written to an rt file, not fsynced, not published
    "seal:after_commit",  # published with its "sealed through" record, memtable not yet cut
)
FLUSH_FAULT_POINTS = (  # a background flush (docs/design/realtime.md, "Background flush")
    "bgflush:after_write",  # the frozen memtable written to an rt file, not fsynced, unpublished
    "bgflush:after_commit",  # published with every user's "sealed through" record, the frozen
    #                          memtable not yet dropped
)
DELETE_FAULT_POINTS = (  # a delete and its purge (docs/design/safety.md, "Deleting a user")
    "delete:after_write",  # a `before=` delete's kept events written to an rt file, unpublished
    "delete:after_commit",  # the delete published (empty/cut list, sealed-through, purge set),
    #                         memtable not yet cut
    "purge:after_rotate",  # merge rotated the log that held a deleted user's records
    "purge:after_commit",  # merge dropped the purged files and published the smaller purge set
)


# Not a kill point: `SEQVAULT_FAULT=hash:weak[@bits]` makes every slot hash keep only its low
# `bits` bits (default 8) from the process's start, so user keys collide on purpose
# (seqvault/index.py reads it; docs/design/safety.md, "Hash collisions").
HASH_FAULT = "hash:weak"


@contextmanager
def weak_hash(bits: int = 8) -> Iterator[None]:
    """TEST ONLY: in this process, slot hashes keep `bits` bits while the block runs (and the
    same for child processes, through the environment)."""
    from . import index

    old_env = os.environ.get(FAULT_ENV)
    os.environ[FAULT_ENV] = ",".join(p for p in (old_env, f"{HASH_FAULT}@{bits}") if p)
    index.set_weak_hash(bits)
    try:
        yield
    finally:
        index.set_weak_hash(0)
        if old_env is None:
            os.environ.pop(FAULT_ENV, None)
        else:
            os.environ[FAULT_ENV] = old_env


class Faults:
    """SEQVAULT_FAULT="point[@n][,point[@n]...]": SIGKILL this process the n-th time (default
    the 1st) it passes `point`. Read once, when the owner (a merger) is created."""

    def __init__(self) -> None:
        self.spec: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        for part in os.environ.get(FAULT_ENV, "").split(","):
            part = part.strip()
            if part:
                name, _, n = part.partition("@")
                self.spec[name] = int(n) if n else 1

    def __call__(self, point: str) -> None:
        if point not in self.spec:
            return
        self.hits[point] = self.hits.get(point, 0) + 1
        if self.hits[point] >= self.spec[point]:
            os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------- I/O fault injection
# Test-only: swap the names of seqvault/iofaults.py for wrappers that count calls, record where
# they came from and fail the Nth call of one operation (docs/design/safety.md, section 9).

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_SELF = os.path.abspath(__file__)


def _call_site() -> tuple[str, tuple[str, ...]]:
    """(innermost seqvault caller as "file.py:line func", the chain of seqvault frames out to
    the first caller outside the package, innermost first)."""
    frame = inspect.currentframe()
    chain: list[str] = []
    while frame is not None:
        fname = os.path.abspath(frame.f_code.co_filename)
        if fname == _SELF:
            frame = frame.f_back
            continue
        if not fname.startswith(_PKG_DIR + os.sep):
            if chain:
                break
            frame = frame.f_back
            continue
        rel = os.path.relpath(fname, _PKG_DIR)
        chain.append(f"{rel}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return (chain[0] if chain else "?"), tuple(chain)


@dataclass
class Injected:
    op: str
    nth: int
    err: int
    site: str
    chain: tuple[str, ...]


@dataclass
class IORecorder:
    """What the armed layer saw: calls per operation and per (operation, site), and the
    failures it injected."""

    op: str | None = None
    nth: int = 0
    err: int = errno.EIO
    sticky: bool = False  # fail every call of `op` from the nth on, not only the nth
    always: tuple[str, ...] = ()  # operations that fail at every call (a second fault)
    calls: dict[str, int] = field(default_factory=dict)
    sites: dict[tuple[str, str], int] = field(default_factory=dict)
    injected: list[Injected] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, op: str) -> Injected | None:
        """Count one call of `op`; the injected failure if this call is to fail."""
        site, chain = _call_site()
        with self.lock:
            n = self.calls[op] = self.calls.get(op, 0) + 1
            self.sites[(op, site)] = self.sites.get((op, site), 0) + 1
            primary = op == self.op and (n == self.nth or (self.sticky and n > self.nth > 0))
            if not primary and op not in self.always:
                return None
            inj = Injected(op, n, self.err, site, chain)
            self.injected.append(inj)
            return inj


def _os_error(inj: Injected, filename: Any = None) -> OSError:
    # As the kernel reports it: fd operations carry no file name, path operations do.
    msg = f"{os.strerror(inj.err)} (injected)"
    return OSError(inj.err, msg) if filename is None else OSError(inj.err, msg, filename)


def _wrap_fd(rec: IORecorder, op: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        inj = rec.hit(op)
        if inj is not None:
            raise _os_error(inj)
        return real(*args, **kwargs)
    return call


def _wrap_path(rec: IORecorder, op: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def call(path: Any, *args: Any, **kwargs: Any) -> Any:
        inj = rec.hit(op)
        if inj is not None:
            raise _os_error(inj, os.fspath(path))
        return real(path, *args, **kwargs)
    return call


def _wrap_commit(rec: IORecorder) -> Callable[[str, str], None]:
    def call(path: str, stage: str) -> None:
        inj = rec.hit(f"commit_{stage}")
        if inj is not None:
            import lmdb  # what a failed mdb_txn_commit raises

            raise lmdb.Error(f"{path}: mdb_txn_commit: {os.strerror(inj.err)} (injected)")
    return call


@contextmanager
def armed(op: str | None, nth: int = 1, err: int = errno.EIO, *,
          sticky: bool = False, always: tuple[str, ...] = ()) -> Iterator[IORecorder]:
    """Route the engine's file operations through counting wrappers; fail the `nth` call of
    `op` (one of `iofaults.OPS`) with errno `err` (only that call, or every later one too with
    `sticky`), and every call of the operations in `always` (e.g. the truncate of a rollback:
    a second fault). `op=None` only counts. Yields the recorder. Not thread-safe against
    another `armed` block at the same time (one process-wide layer)."""
    from . import iofaults

    for name in (op, *always):
        if name is not None and name not in iofaults.OPS:
            raise ValueError(f"op: {name!r} is not one of {iofaults.OPS}")
    rec = IORecorder(op, nth, err, sticky, always)
    saved = {name: getattr(iofaults, name) for name in (*_FD_OPS, *_PATH_OPS, "commit_point")}
    try:
        for name in _FD_OPS:
            setattr(iofaults, name, _wrap_fd(rec, name, saved[name]))
        for name in _PATH_OPS:
            setattr(iofaults, name, _wrap_path(rec, name, saved[name]))
        iofaults.commit_point = _wrap_commit(rec)
        yield rec
    finally:
        for name, real in saved.items():
            setattr(iofaults, name, real)


def counting() -> AbstractContextManager[IORecorder]:
    """`armed` that fails nothing: how many calls of each operation, from which sites."""
    return armed(None, 0)


_FD_OPS = ("write", "pwrite", "fsync", "fdatasync", "ftruncate")
_PATH_OPS = ("replace", "rename", "open_fd")
