"""Extent files: append-only files of sealed segments, read with pread.

Real-time segments (from flushes of the log) and lifetime segments (from merge and bulk
ingest) live in different files, so that garbage clusters and whole files die together.
A file's committed size lives in the LMDB catalog; bytes past it are an unpublished tail
(a crash mid-flush) and are cut off when the writer opens the store.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Container
from pathlib import Path

from . import iofaults
from .errors import CorruptionError
from .segcache import SegmentCache

KINDS = ("rt", "lt")
DEFAULT_MAX_FILE = 256 << 20


def file_name(kind: str, file_id: int) -> str:
    return f"{kind}-{file_id:08d}.svx"


def parse_file_name(name: str) -> tuple[str, int] | None:
    if not name.endswith(".svx") or name[:3] not in ("rt-", "lt-"):
        return None
    try:
        return name[:2], int(name[3:-4])
    except ValueError:
        return None


class ExtentFiles:
    """Open file handles by id; the writer also appends to one open file per kind."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._fds: dict[int, int] = {}
        self._names: dict[int, str] = {}
        self._lock = threading.Lock()
        # Files deleted by space reclamation (docs/design/merge.md, "Deleting files"): opening
        # one raises FileNotFoundError (the caller retries on a newer snapshot); an open fd is
        # closed once no pread is using it, so a number is never reused under a reader.
        self._retired: set[int] = set()
        self._busy: dict[int, int] = {}
        # Decoded segments for reads (seqvault/segcache.py); set by the store's open.
        self.cache: SegmentCache | None = None

    def register(self, file_id: int, kind: str) -> None:
        self._names[file_id] = file_name(kind, file_id)

    def path(self, file_id: int) -> Path:
        return self.dir / self._names[file_id]

    def _fd(self, file_id: int) -> int:
        """The open fd of `file_id` (caller holds self._lock)."""
        fd = self._fds.get(file_id)
        if fd is None:
            if file_id in self._retired:
                raise FileNotFoundError(errno.ENOENT, "extent file was deleted by reclamation",
                                        str(self.path(file_id)))
            if file_id not in self._names:
                raise CorruptionError(f"extent refers to file {file_id}, which is not in "
                                      "the catalog")
            fd = os.open(self.path(file_id), os.O_RDONLY)  # FileNotFoundError: deleted
            self._fds[file_id] = fd
        return fd

    def pread(self, file_id: int, offset: int, length: int) -> bytes:
        with self._lock:
            fd = self._fd(file_id)
            self._busy[file_id] = self._busy.get(file_id, 0) + 1
        try:
            data = os.pread(fd, length, offset)
        finally:
            with self._lock:
                left = self._busy[file_id] - 1
                if left:
                    self._busy[file_id] = left
                else:
                    del self._busy[file_id]
                    if file_id in self._retired:
                        self._close_locked(file_id)
        if len(data) != length:
            raise CorruptionError(
                f"{self.path(file_id)}: extent at offset {offset} wants {length} bytes, file "
                f"has only {len(data)} there (truncated?)", path=str(self.path(file_id)))
        return data

    def retire(self, file_id: int) -> None:
        """The file was deleted (or is about to be): refuse new opens, close the fd when idle."""
        if self.cache is not None:
            self.cache.drop_file(file_id)
        with self._lock:
            self._retired.add(file_id)
            if file_id not in self._busy:
                self._close_locked(file_id)

    def retire_missing(self, live_ids: Container[int]) -> list[int]:
        """Retire every known file that is not in `live_ids` (a reader's new catalog)."""
        gone = [fid for fid in list(self._names) if fid not in live_ids and fid not in self._retired]
        for fid in gone:
            self.retire(fid)
        return gone

    def _close_locked(self, file_id: int) -> None:
        fd = self._fds.pop(file_id, None)
        if fd is not None:
            os.close(fd)

    def forget(self, file_id: int) -> None:
        with self._lock:
            fd = self._fds.pop(file_id, None)
            self._names.pop(file_id, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


class FileAppender:
    """Appends bytes to one extent file. The caller fsyncs before publishing offsets."""

    def __init__(self, path: Path, file_id: int, kind: str) -> None:
        self.path = path
        self.file_id = file_id
        self.kind = kind
        self.fd = iofaults.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self.fd).st_size

    def append(self, data: bytes | memoryview) -> int:
        offset = self.size
        view = memoryview(data)
        try:
            while view:
                n = iofaults.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            raise iofaults.named(exc, self.path) from exc
        self.size += len(data)
        return offset

    def sync(self) -> None:
        try:
            iofaults.fsync(self.fd)
        except OSError as exc:
            raise iofaults.named(exc, self.path) from exc

    def truncate(self, size: int) -> None:
        """Cut the file back to `size` (unpublished bytes of a rolled-back write)."""
        try:
            iofaults.ftruncate(self.fd, size)
        except OSError as exc:
            raise iofaults.named(exc, self.path) from exc
        self.size = size

    def close(self) -> None:
        os.close(self.fd)
