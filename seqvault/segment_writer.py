"""Writers of extent files: encode a user's events into a segment, append it, sync, roll over.

One class serves every producer of segments — flush (real-time files), bulk load and ingest
(the store's lifetime file) and merge (its own private lifetime file) — as LevelDB's
`BuildTable` serves flush and repair. A writer never publishes: it reports the files it
touched as `FileInfo` records for the caller's `Edit`, and `rollback()` cuts what was written
since the last publish (nothing refers to those bytes; docs/format/manifest.md, "Catalog").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from .files import FileAppender, file_name
from .index import Extent
from .manifest import FileInfo, Manifest
from .schema import Schema
from .segment import encode_segment
from .wal import fsync_dir


def encode_user_segment(schema: Schema, key: Any, ts: np.ndarray,
                        cols: Mapping[str, np.ndarray], zstd_level: int) -> bytes:
    """One segment of `key`'s events (sorted `ts`; string columns as dictionary codes)."""
    return encode_segment(
        key, schema.version, ts,
        ((c.id, c.type, cols[c.name], c.level if c.level is not None else zstd_level)
         for c in schema.columns))


class SegmentWriter:
    """Appends segments to files of one kind; rolls to a new file at `max_file_bytes`.

    `private=True` (merge): the file is sealed in the catalog from its creation, so the store's
    own writers never append to it after a reopen.
    holds: the store lock while appending to a store writer (flush, bulk); a private writer is
    used by one thread at a time (the merge mutex).
    """

    def __init__(self, manifest: Manifest, kind: str, *, private: bool = False,
                 on_error: Callable[[BaseException], None] | None = None,
                 lock: AbstractContextManager[Any] | None = None) -> None:
        self.manifest = manifest
        # Taken around a new file's creation (the in-memory catalog changes): the store lock,
        # for the background flush, which appends without holding it (vault.py).
        self.lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()
        # Told about every failed write, fsync or file creation before it is raised: the
        # store's fail-stop (bulk loads and ingest write through the store's own writers).
        self.on_error = on_error
        self.kind = kind
        self.private = private
        self.app: FileAppender | None = None
        self.published: dict[int, int] = {}  # file id → size at the last publish
        self.rolled: list[FileAppender] = []  # full files written since the last publish
        self.new_dir_entry = False
        self.created: set[int] = set()  # files created since the last publish

    # ------------------------------------------------------------------ appending
    @property
    def file_id(self) -> int | None:
        return self.app.file_id if self.app is not None else None

    @property
    def size(self) -> int:
        return self.app.size if self.app is not None else 0

    def append(self, blob: bytes, count: int, min_ts: int, max_ts: int) -> Extent:
        try:
            app = self._room_for(len(blob))
            off = app.append(blob)
        except OSError as exc:
            self.failed(exc)
            raise
        return Extent(app.file_id, off, len(blob), count, min_ts, max_ts)

    def append_many(self, blobs: list[bytes | memoryview]) -> tuple[int, int]:
        """Append blobs in one write; returns (file id, offset of the first)."""
        data = b"".join(blobs)
        try:
            app = self._room_for(len(data))
            return app.file_id, app.append(data)
        except OSError as exc:
            self.failed(exc)
            raise

    def failed(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(exc)

    def _room_for(self, need: int) -> FileAppender:
        m = self.manifest
        limit = int(m.settings["max_file_bytes"])
        app = self.app
        if app is not None and app.size + need > limit and app.size > 0:
            self.rolled.append(app)
            self.app = app = None
        if app is None:
            with self.lock:
                fid = None if self.private else self._reusable(need, limit)
                if fid is None:
                    fid = m.new_file_id(self.kind, sealed=self.private)
                    self.created.add(fid)
                    self.new_dir_entry = True
                app = FileAppender(m.files.dir / file_name(self.kind, fid), fid, self.kind)
                self.published.setdefault(fid, m.catalog[fid].size)
                self.app = app
        return app

    def _reusable(self, need: int, limit: int) -> int | None:
        """The newest unsealed file of this kind, if it has room (a reopened store)."""
        cands = [fid for fid, info in self.manifest.catalog.items()
                 if info.kind == self.kind and not info.sealed and fid not in self.published]
        if not cands:
            return None
        fid = max(cands)
        return fid if self.manifest.catalog[fid].size + need <= limit else None

    # ------------------------------------------------------------------ publishing
    def sync(self) -> None:
        """fsync every file written since the last publish (and the directory if new)."""
        try:
            for app in [*self.rolled, *([self.app] if self.app is not None else [])]:
                if app.size > self.published.get(app.file_id, 0):
                    app.sync()
            if self.new_dir_entry:
                fsync_dir(self.manifest.files.dir)
                self.new_dir_entry = False
        except OSError as exc:
            self.failed(exc)
            raise

    def pending(self) -> dict[int, FileInfo]:
        """Catalog records for the files this writer grew since the last publish."""
        out: dict[int, FileInfo] = {}
        for app in [*self.rolled, *([self.app] if self.app is not None else [])]:
            if app.size != self.published.get(app.file_id, -1) or app in self.rolled:
                info = self.manifest.catalog[app.file_id]
                out[app.file_id] = FileInfo(self.kind, app.size, info.created_ns,
                                            sealed=self.private or app in self.rolled)
        return out

    def published_now(self) -> None:
        """The caller's Edit with `pending()` committed: forget rolled files, remember sizes."""
        for app in self.rolled:
            app.close()
        self.rolled.clear()
        self.created.clear()
        self.published = {self.app.file_id: self.app.size} if self.app is not None else {}

    def rollback(self) -> None:
        """Cut everything written since the last publish (unreferenced bytes); files created
        since then are deleted and forgotten (the writer open would delete them anyway)."""
        for app in [*self.rolled, *([self.app] if self.app is not None else [])]:
            if app.file_id in self.created:
                app.close()
                app.path.unlink(missing_ok=True)
                self.manifest.forget_file(app.file_id)
                self.published.pop(app.file_id, None)
                if app is self.app:
                    self.app = None
                continue
            before = self.published.get(app.file_id, 0)
            if app.size > before:
                app.truncate(before)
        for app in self.rolled:
            if app.file_id not in self.created:
                app.close()
        self.rolled.clear()
        self.created.clear()

    def seal(self) -> FileInfo | None:
        """Stop appending to the current file (sync, close); its record marked sealed."""
        app = self.app
        if app is None:
            return None
        try:
            app.sync()
        except OSError as exc:
            self.failed(exc)
            raise
        app.close()
        self.app = None
        self.published.pop(app.file_id, None)
        info = self.manifest.catalog[app.file_id]
        return FileInfo(self.kind, app.size, info.created_ns, sealed=True)

    def close(self) -> None:
        for app in [*self.rolled, *([self.app] if self.app is not None else [])]:
            app.close()
        self.rolled.clear()
        self.app = None

    def path(self) -> Path | None:
        return self.app.path if self.app is not None else None
