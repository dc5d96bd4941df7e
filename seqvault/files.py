"""Extent files: append-only files of sealed segments, read with pread.

Real-time segments (from flushes of the log) and lifetime segments (from merge and bulk
ingest) live in different files, so that garbage clusters and whole files die together.
A file's committed size lives in the LMDB catalog; bytes past it are an unpublished tail
(a crash mid-flush) and are cut off when the writer opens the store.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .errors import CorruptionError

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

    def register(self, file_id: int, kind: str) -> None:
        self._names[file_id] = file_name(kind, file_id)

    def path(self, file_id: int) -> Path:
        return self.dir / self._names[file_id]

    def _fd(self, file_id: int) -> int:
        fd = self._fds.get(file_id)
        if fd is None:
            with self._lock:
                fd = self._fds.get(file_id)
                if fd is None:
                    if file_id not in self._names:
                        raise CorruptionError(f"extent refers to file {file_id}, which is not in "
                                              "the catalog")
                    fd = os.open(self.path(file_id), os.O_RDONLY)
                    self._fds[file_id] = fd
        return fd

    def pread(self, file_id: int, offset: int, length: int) -> bytes:
        data = os.pread(self._fd(file_id), length, offset)
        if len(data) != length:
            raise CorruptionError(
                f"{self.path(file_id)}: extent at offset {offset} wants {length} bytes, file "
                f"has only {len(data)} there (truncated?)", path=str(self.path(file_id)))
        return data

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
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self.fd).st_size

    def append(self, data: bytes) -> int:
        offset = self.size
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)
        return offset

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
