"""The contract between the store and its maintenance jobs (bulk load, merge, reclamation,
the background merger): the only things those modules may touch of a store.

After zarr-python's `abc/` contracts and diskcache's FanoutCache, which uses only `Cache`'s
public methods: `SeqVault` meets this protocol, and `bulk`, `merge`, `reclaim` and
`background` import this module, never `vault` (an import-linter contract in pyproject.toml
keeps it so).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from .manifest import Edit, Manifest
from .segment_writer import SegmentWriter


class Published(Protocol):
    """A writer whose pending bytes a commit publishes (SegmentWriter, merge.MergeOutput): told
    so once the commit is durable, even when the commit call itself raised (Manifest.landed),
    so that no rollback cuts what the catalog now refers to."""

    def published_now(self) -> None: ...


class Engine(Protocol):
    path: Path
    read_only: bool
    # The store lock: appends, flushes and publishes hold it; reads hold it only to snapshot.
    lock: threading.RLock
    manifest: Manifest
    # The store's own segment writers by file kind ("rt": flush, "lt": bulk load and ingest).
    writers: dict[str, SegmentWriter]

    @property
    def closed(self) -> bool: ...

    @property
    def flush_count(self) -> int:
        """Flushes since this writer opened (the merge backlog is counted in flushes)."""
        ...

    def check_writable(self) -> None:
        """Raise StoreClosed / ReadOnlyError unless this is an open writer."""
        ...

    def flush(self, *, rotate: bool = False) -> None:
        """Seal the memtable into real-time segments (empty memtable and log after); with
        `rotate`, start a new log even when the memtable is empty (a purge of deleted users)."""
        ...

    def wait_flush(self) -> None:
        """Wait until no background flush is in flight (its commit done). Whatever changes
        users' extent lists calls it first. holds: the store lock (released while waiting)."""
        ...

    def publish(self, edit: Edit, *, rotate_log: bool = False,
                writers: tuple[Published, ...] = ()) -> int:
        """Commit `edit` (with a new, empty log if `rotate_log`; the memtable must then be
        empty or sealed by this edit); `writers` whose files the edit publishes are told so
        right after the commit; then checkpoint the index if due. holds: the store lock.
        Returns the commit sequence number."""
        ...

    def checkpoint(self) -> None: ...

    def fail_stop(self, exc: BaseException) -> None:
        """A write, fsync or commit failed with `exc`: refuse every later write until reopened
        (exceptions that are not I/O failures are ignored)."""
        ...

    def active_files(self) -> set[int]:
        """Files something may still append to (never reclaimed while active)."""
        ...
