"""Spill files: rows partitioned by user hash into Arrow IPC streams inside the store.

Pass 1 of an ingest writes every (validated, converted) row to the partition of its user, in
input order. Pass 2 reads one partition at a time, so memory is bounded by the partition size,
not the file size. Rows within a partition file keep input order (files in the order given,
rows in file order): a stable sort by (user, ts) therefore keeps equal timestamps in input
order without an explicit sequence column (docs/design/ingest.md, "Order").
"""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np

TMP_PREFIX = "tmp-ingest-"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def partition_of_ints(users: np.ndarray, parts: int) -> np.ndarray:
    """Fibonacci hashing of int64 user ids → partition numbers (int64)."""
    h = (users.astype(np.int64, copy=False).view(np.uint64) * _GOLDEN) >> np.uint64(32)
    return (h % np.uint64(parts)).astype(np.int64)


def partition_of_strings(users: Any, parts: int) -> np.ndarray:
    """CRC-32 of each distinct UTF-8 user id in the batch → partition numbers (int64)."""
    import pyarrow as pa

    enc = users.dictionary_encode()
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    uniq = enc.dictionary.to_pylist()
    per_uniq = np.fromiter((zlib.crc32(u.encode("utf-8")) % parts for u in uniq),
                           dtype=np.int64, count=len(uniq))
    return per_uniq[enc.indices.to_numpy(zero_copy_only=False)]


def clean_stale(store: Path) -> list[Path]:
    """Remove spill directories left by an ingest that was killed (the caller holds the lock)."""
    removed = []
    for p in store.iterdir():
        if p.is_dir() and p.name.startswith(TMP_PREFIX):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


class Spill:
    """`parts` Arrow IPC stream files under `directory`, opened on first write."""

    def __init__(self, directory: Path, parts: int, arrow_schema: Any,
                 compression: str | None = None) -> None:
        import pyarrow as pa

        self.directory = directory
        self.parts = parts
        self.schema = arrow_schema
        self.options = pa.ipc.IpcWriteOptions(compression=compression)
        self._writers: dict[int, tuple[Any, Any]] = {}
        self.rows = np.zeros(parts, dtype=np.int64)
        # One partition: everything fits the memory budget anyway, so keep the batches in
        # memory instead of writing and re-reading them.
        self._memory: list[Any] | None = [] if parts == 1 else None
        directory.mkdir(parents=False, exist_ok=False)

    def path(self, part: int) -> Path:
        return self.directory / f"part-{part:05d}.arrows"

    def write(self, batch: Any, part_ids: np.ndarray) -> None:
        """Write each row of `batch` (a RecordBatch) to partition `part_ids[row]`,
        keeping row order within each partition."""
        import pyarrow as pa

        if batch.num_rows == 0:
            return
        if self._memory is not None:
            self._memory.append(batch)
            self.rows[0] += batch.num_rows
            return
        order = np.argsort(part_ids, kind="stable")
        counts = np.bincount(part_ids, minlength=self.parts)
        taken = batch.take(pa.array(order))
        start = 0
        for part in np.flatnonzero(counts):
            n = int(counts[part])
            self._writer(int(part)).write_batch(taken.slice(start, n))
            self.rows[part] += n
            start += n

    def _writer(self, part: int) -> Any:
        import pyarrow as pa

        entry = self._writers.get(part)
        if entry is None:
            sink = pa.OSFile(str(self.path(part)), "wb")
            entry = (sink, pa.ipc.new_stream(sink, self.schema, options=self.options))
            self._writers[part] = entry
        return entry[1]

    def finish(self) -> None:
        writers, self._writers = list(self._writers.values()), {}
        errors: list[BaseException] = []
        for sink, writer in writers:
            # Close every file even when one fails (a full disk fails the flush of each):
            # a leaked descriptor would keep a removed spill file's blocks allocated.
            for closer in (writer.close, sink.close):
                try:
                    closer()
                except Exception as exc:  # noqa: BLE001 - re-raised below
                    errors.append(exc)
        if errors:
            raise errors[0]

    def read(self, part: int) -> Any:
        """The partition as one pyarrow Table (empty table when nothing was written)."""
        import pyarrow as pa

        if self._memory is not None:
            batches, self._memory = self._memory, []
            return pa.Table.from_batches(batches, schema=self.schema)
        p = self.path(part)
        if not p.exists():
            return self.schema.empty_table()
        with pa.OSFile(str(p), "rb") as src:
            return pa.ipc.open_stream(src).read_all()

    def drop(self, part: int) -> None:
        self.path(part).unlink(missing_ok=True)

    def remove(self) -> None:
        """Close and delete every spill file; never raises (it runs while an ingest fails,
        typically because the disk is full, and must give the space back then)."""
        try:
            self.finish()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        finally:
            self._memory = None
            shutil.rmtree(self.directory, ignore_errors=True)

    def bytes_on_disk(self) -> int:
        return sum(os.path.getsize(p) for p in self.directory.iterdir())
