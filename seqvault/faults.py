"""Fault points for crash tests: a process told so through the environment SIGKILLs itself
when it passes a named point, so tests can kill a writer at exact steps of a protocol
(docs/design/merge.md lists the points and what each proves)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

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
