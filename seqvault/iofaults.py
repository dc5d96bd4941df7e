"""The engine's writes to its own files, in one place a test can arm to fail.

Every write, fsync, rename, truncate and write-open of the store's files (the log, extent
files, the index checkpoint, the directories' fsyncs) is called through these names, as
``iofaults.write(fd, data)``. Each name *is* the `os` function: in production the cost is one
module attribute lookup. `seqvault.faults.armed(...)` swaps a name for a wrapper that counts
calls, records the call site and raises an injected error at the Nth call, so a test can fail
every call site in turn (tests/safety/test_fault_loop.py; docs/design/safety.md, section 9).

LMDB writes its pages in C, out of reach of these names. `commit_point` marks the two edges of
the metadata commit instead: "before" (inside the write transaction: LMDB aborts it, nothing
is committed) and "after" (the transaction committed, yet the caller sees an error, as when the
final fsync of LMDB's meta page fails: durable, reported as failed).
"""

from __future__ import annotations

import os
from collections.abc import Callable

write = os.write
pwrite = os.pwrite
fsync = os.fsync
fdatasync = os.fdatasync
replace = os.replace
rename = os.rename
ftruncate = os.ftruncate
open_fd = os.open  # opens that create or write a file (reads use os.open directly)


def named(exc: OSError, path: os.PathLike[str] | str) -> OSError:
    """`exc` with the file's path: the kernel names no file for an fd operation (write, fsync),
    and a disk-full message must say which file (docs/design/safety.md, section 3)."""
    if exc.filename is not None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def no_fault(path: str, stage: str) -> None:
    """`commit_point` when nothing is armed."""


commit_point: Callable[[str, str], None] = no_fault

# The names above that a test can arm (faults.armed); "commit_before"/"commit_after" are the
# two stages of `commit_point`.
OPS = ("write", "pwrite", "fsync", "fdatasync", "replace", "rename", "ftruncate", "open_fd",
       "commit_before", "commit_after")
