"""`seqvault export`: users' events to one Parquet file, atomically and in vectorised batches.

Atomic: the file is written under a temporary name in the target's directory, fsynced, and
renamed over the target only when complete (then the directory is fsynced). A failure (a
corrupt extent, a full disk, Ctrl-C) removes the temporary file and leaves any existing file
of that name untouched (docs/design/safety.md, section 2).

Fast: string columns are read as dictionary codes (`read(..., strings="codes")`), rows of
many users are gathered as numpy arrays, and each row group is built with a handful of
vectorised Arrow calls; no per-event Python work and no per-user Arrow objects. The cost
left is the read path's, one user at a time; `jobs` spreads it over processes.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROW_GROUP_ROWS = 1 << 20
CHUNK_USERS = 2048  # users a worker reads per task (and between progress updates)
PARALLEL_MIN_EVENTS = 500_000


def arrow_fields(schema: Any, names: list[str]) -> list[Any]:
    """The Parquet columns: the user column, then `names` (ts first) in the schema's types."""
    import pyarrow as pa

    fields = [pa.field(schema.user_column, pa.string() if schema.user_type == "string"
                       else pa.int64())]
    for n in names:
        if n == schema.time_column:
            fields.append(pa.field(n, pa.int64()))
        else:
            c = schema.column(n)
            fields.append(pa.field(n, pa.string() if c.is_string
                                   else pa.from_numpy_dtype(c.dtype)))
    return fields


class _RowGroup:
    """Rows of many users, column by column, until there are enough for a row group."""

    def __init__(self, schema: Any, names: list[str]) -> None:
        self.schema = schema
        self.names = names
        self.strings = {n for n in names if n != schema.time_column and schema.column(n).is_string}
        self.clear()

    def clear(self) -> None:
        self.keys: list[Any] = []
        self.counts: list[int] = []
        self.cols: dict[str, list[np.ndarray]] = {n: [] for n in self.names}
        self.dicts: dict[str, list[np.ndarray]] = {n: [] for n in self.strings}
        self.rows = 0

    def add(self, key: Any, seq: Any) -> None:
        self.keys.append(key)
        self.counts.append(len(seq))
        for n in self.names:
            self.cols[n].append(seq[n])
        for n in self.strings:
            self.dicts[n].append(seq.dictionaries[n])
        self.rows += len(seq)

    def table(self, arrow_schema: Any) -> Any:
        import pyarrow as pa

        counts = np.asarray(self.counts, dtype=np.int64)
        if self.schema.user_type == "string":
            user = pa.array(self.keys, pa.string()).take(pa.array(np.repeat(
                np.arange(len(self.keys)), counts)))
        else:
            user = pa.array(np.repeat(np.asarray(self.keys, dtype=np.int64), counts))
        arrays = [user]
        for n, f in zip(self.names, list(arrow_schema)[1:]):
            values = np.concatenate(self.cols[n])
            if n in self.strings:
                arrays.append(_decode(values, self.dicts[n], self.counts))
            else:
                arrays.append(pa.array(values, type=f.type))
        return pa.Table.from_arrays(arrays, schema=arrow_schema)


def _decode(codes: np.ndarray, dicts: list[np.ndarray], counts: list[int]) -> Any:
    """Dictionary codes of many users → one Arrow string array. Users share the store's
    dictionary (one cached array), except a read that appended a column default to its copy:
    each distinct dictionary gets an offset into their concatenation."""
    import pyarrow as pa

    offsets: dict[int, int] = {}
    parts: list[np.ndarray] = []
    size = 0
    per_user = np.empty(len(dicts), dtype=np.int64)
    for i, d in enumerate(dicts):
        off = offsets.get(id(d))
        if off is None:
            off = offsets[id(d)] = size
            parts.append(d)
            size += d.size
        per_user[i] = off
    if len(parts) > 1:
        codes = codes.astype(np.int64) + np.repeat(per_user, counts)
    dictionary = pa.array(np.concatenate(parts) if len(parts) > 1 else parts[0], pa.string()) \
        if parts else pa.array([], pa.string())
    return dictionary.take(pa.array(codes))


def _chunk_table(vault: Any, keys: list[Any], names: list[str], since: int | None,
                 before: int | None) -> Any:
    """The events of `keys` as one Arrow table (None when they have none)."""
    import pyarrow as pa

    arrow_schema = pa.schema(arrow_fields(vault.schema, names))
    group = _RowGroup(vault.schema, names)
    for key in keys:
        seq = vault.read(key, columns=names, since=since, before=before, strings="codes")
        if len(seq):
            group.add(key, seq)
    return group.table(arrow_schema) if group.rows else None


# Worker processes (spawned: LMDB environments must not cross a fork) keep one read-only open.
_WORKER: dict[str, Any] = {}


def _worker_init(store: str) -> None:
    from ..vault import SeqVault

    _WORKER["vault"] = SeqVault.open(store, read_only=True)


def _worker_chunk(keys: list[Any], names: list[str], since: int | None,
                  before: int | None) -> tuple[int, bytes | None]:
    import pyarrow as pa

    table = _chunk_table(_WORKER["vault"], keys, names, since, before)
    if table is None:
        return len(keys), None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return len(keys), sink.getvalue().to_pybytes()


def default_jobs(events: int) -> int:
    """Worker processes for an export of `events` events: one for small exports (starting a
    process costs about 0.3 s of imports), else one per idle core, up to 8. Export is bound
    by the read path's CPU, so processes help only where cores are idle: on a machine whose
    load average already fills its cores, a second process made a 3M-event export slower
    (bench/export_bench.py; docs/design/safety.md)."""
    if events < PARALLEL_MIN_EVENTS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    idle = cores - os.getloadavg()[0]
    return max(1, min(8, int(idle + 0.5)))


def _tables(vault: Any, keys: list[Any], names: list[str], since: int | None,
            before: int | None, jobs: int) -> Iterator[tuple[int, Any]]:
    """(users done, Arrow table or None) per chunk of users, in key order."""
    step = CHUNK_USERS
    chunks = [keys[i:i + step] for i in range(0, len(keys), step)]
    if jobs <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield len(chunk), _chunk_table(vault, chunk, names, since, before)
        return
    import multiprocessing as mp

    import pyarrow as pa

    ctx = mp.get_context("spawn")
    with ctx.Pool(min(jobs, len(chunks)), initializer=_worker_init,
                  initargs=(str(vault.path),)) as pool:
        results = pool.imap(functools.partial(_worker_chunk, names=names, since=since,
                                              before=before), chunks)
        for done, blob in results:
            yield done, (None if blob is None else pa.ipc.open_stream(blob).read_all())


def export_parquet(vault: Any, out: str | os.PathLike[str], keys: list[Any], names: list[str],
                   *, since: int | None = None, before: int | None = None, jobs: int = 1,
                   progress: Callable[[str, int, int | None], None] | None = None
                   ) -> dict[str, Any]:
    """Write `keys`' events (columns `names`, ts first) to the Parquet file `out`, atomically,
    reading with `jobs` processes. Returns {"path", "users", "events", "bytes"}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = Path(out)
    arrow_schema = pa.schema(arrow_fields(vault.schema, names))
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    # Created here (not by pyarrow) so a permission or missing-directory error names the path.
    fh = open(tmp, "xb")  # noqa: SIM115 - closed below, on every path
    rows = 0
    users_done = 0
    try:
        # Row groups are encoded and compressed by a writer thread (pyarrow releases the GIL
        # there) while this thread reads the next users; one group in flight bounds memory.
        with pq.ParquetWriter(fh, arrow_schema, compression="zstd") as writer, \
                ThreadPoolExecutor(1, thread_name_prefix="export-writer") as io:
            in_flight: Future[None] | None = None
            pending: list[Any] = []
            pending_rows = 0
            for done, table in _tables(vault, keys, names, since, before, jobs):
                users_done += done
                if table is not None:
                    pending.append(table)
                    pending_rows += table.num_rows
                if pending_rows >= ROW_GROUP_ROWS:
                    if in_flight is not None:
                        in_flight.result()  # raises the writer's error here
                    in_flight = io.submit(writer.write_table, pa.concat_tables(pending))
                    rows += pending_rows
                    pending, pending_rows = [], 0
                if progress is not None:
                    progress("export", users_done, len(keys))
            if in_flight is not None:
                in_flight.result()
            if pending:
                writer.write_table(pa.concat_tables(pending))
                rows += pending_rows
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(tmp, target)
    except BaseException:
        fh.close()
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return {"path": str(target), "users": len(keys), "events": rows,
            "bytes": target.stat().st_size}


def _fsync_dir(path: Path) -> None:
    """Make the rename durable (best effort: some filesystems refuse fsync on a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
