"""`ingest()`: load Parquet / CSV / JSON-lines files into a store, atomically, in bounded memory.

    fingerprint files → refuse duplicates (ledger)
    pass 1: stream batches → validate + convert → partition by user hash → spill (Arrow IPC)
    pass 2: per partition: stable sort by (user, ts) → BulkWriter.add per user
    commit: data + dictionary entries + ledger entries in ONE LMDB transaction

Until the commit nothing is visible, and a crash (even SIGKILL) leaves only unpublished files
that the store deletes when it is next opened. See docs/design/ingest.md.
"""

from __future__ import annotations

import os
import resource
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import segment_batch as fastpath
from ..errors import DuplicateIngest, ValidationError
from ..index import user_hash
from ..layout import RECENT_SEGMENT_EVENTS
from ..schema import Schema, retention_cutoff
from ..segment import KEY_INT64, KEY_STRING, key_bytes
from ..validate import coerce_column, coerce_time, coerce_users
from . import ledger
from .sources import FINGERPRINT_ALG, Batch, InputFile, expand_paths, fingerprint
from .spill import TMP_PREFIX, Spill, clean_stale, partition_of_ints, partition_of_strings

if TYPE_CHECKING:
    from ..vault import SeqVault

ProgressFn = Callable[[str, int, "int | None"], None]
"""progress(phase, done, total): phase is "fingerprint" (bytes), "read" or "write" (rows)."""

DEFAULT_PARTITION_ROWS = 1_000_000
DEFAULT_BATCH_ROWS = 262_144
FAST_CHUNK_EVENTS = 262_144
MAX_PARTITIONS = 1024
_EST_BYTES_PER_ROW = {"csv": 40, "json": 120}


@dataclass
class IngestSummary:
    files: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    users: int = 0
    input_bytes: int = 0
    raw_bytes: int = 0
    bytes_written: int = 0
    spill_bytes: int = 0
    partitions: int = 0
    spill_compression: str = "none"
    compression_ratio: float = 0.0
    elapsed_s: float = 0.0
    events_per_s: float = 0.0
    peak_rss_bytes: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    dropped_expired: int = 0  # rows older than retention, left out with expired="drop"
    commit_seq: int = 0
    phases_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports kilobytes)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _where(f: InputFile, b: Batch, row: int | None) -> str:
    loc = f"{f.path}: {b.unit} {b.unit_index}"
    if row is not None:
        loc += f", row {b.unit_row + row} (row {b.file_row + row} of the file)"
    return loc


def _relocate(exc: ValidationError, f: InputFile, b: Batch) -> ValidationError:
    """Prefix a validation error with the file, row group and row it came from."""
    row = exc.row
    msg = f"{_where(f, b, row)}: {exc}"
    return ValidationError(msg, column=exc.column, value=exc.value,
                           row=None if row is None else b.file_row + row)


class _Converter:
    """Validate one record batch against the schema and turn it into spill columns:
    user, ts (int64), numeric columns in the schema's dtype, string columns as store codes."""

    def __init__(self, vault: SeqVault, expired: str = "refuse") -> None:
        import pyarrow as pa

        self.vault = vault
        # expired="drop": rows older than the retention window are left out and counted
        # (validated first, so an error still names its row in the input).
        self.cutoff = retention_cutoff(vault.schema) if expired == "drop" else None
        self.dropped = 0
        self.schema: Schema = vault.schema
        fields = [pa.field("user", pa.string() if self.schema.user_type == "string"
                           else pa.int64()), pa.field("ts", pa.int64())]
        for c in self.schema.columns:
            fields.append(pa.field(c.name, pa.uint32() if c.is_string
                                   else pa.from_numpy_dtype(c.dtype)))
        self.spill_schema = pa.schema(fields)

    def needed(self) -> list[str]:
        s = self.schema
        return [s.user_column, s.time_column, *(c.name for c in s.columns)]

    def convert(self, f: InputFile, b: Batch) -> tuple[Any, np.ndarray]:
        """(spill RecordBatch, partition-hash input) for one input batch."""
        import pyarrow as pa

        s = self.schema
        rb = b.data
        names = rb.schema.names
        missing = [c for c in self.needed() if c not in names]
        if missing:
            raise ValidationError(f"{f.path}: missing column(s) {missing}; the store's schema "
                                  f"needs {self.needed()} (columns in the file: {names})",
                                  column=missing[0])
        try:
            ucol = rb.column(names.index(s.user_column))
            if s.user_type == "string":
                if not (pa.types.is_string(ucol.type) or pa.types.is_large_string(ucol.type)
                        or pa.types.is_dictionary(ucol.type)):
                    coerce_users(s, ucol)  # raises with an example value
                    raise ValidationError(f"column {s.user_column!r}: arrow type {ucol.type} is "
                                          "not a string", column=s.user_column)
                if ucol.null_count:
                    coerce_users(s, ucol)  # names the first null row
                users: Any = ucol.cast(pa.string())
            else:
                if not pa.types.is_integer(ucol.type) and not pa.types.is_floating(ucol.type):
                    example = ucol[0].as_py() if len(ucol) else None
                    raise ValidationError(f"column {s.user_column!r} row 0: value {example!r} "
                                          f"(arrow type {ucol.type}) is not an int64 user id",
                                          column=s.user_column, row=0, value=example)
                users = coerce_users(s, ucol)
            ts = coerce_time(s, rb.column(names.index(s.time_column)),
                             retention=self.cutoff is None)
            arrays: list[Any] = [users if s.user_type == "string" else pa.array(users),
                                 pa.array(ts)]
            for c in s.columns:
                col = rb.column(names.index(c.name))
                if c.is_string:
                    arrays.append(pa.array(self._codes(c.name, col)))
                else:
                    arrays.append(pa.array(coerce_column(c, col)))
        except ValidationError as exc:
            raise _relocate(exc, f, b) from None
        out = pa.RecordBatch.from_arrays(arrays, schema=self.spill_schema)
        if self.cutoff is not None and ts.size and int(ts.min()) < self.cutoff:
            keep = ts >= self.cutoff
            self.dropped += int(keep.size - np.count_nonzero(keep))
            out = out.filter(pa.array(keep))
            users = users.filter(pa.array(keep)) if s.user_type == "string" else users[keep]
        return out, users

    def _codes(self, name: str, col: Any) -> np.ndarray:
        """Arrow strings → the store's dictionary codes (new strings get new codes; they are
        published with the data, or forgotten on abort)."""
        import pyarrow as pa

        t = col.type
        if pa.types.is_dictionary(t):
            if not pa.types.is_string(t.value_type) and not pa.types.is_large_string(t.value_type):
                raise ValidationError(f"column {name!r}: arrow type {t} is not a string",
                                      column=name)
            enc = col
        else:
            if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                example = col[0].as_py() if len(col) else None
                raise ValidationError(f"column {name!r} row 0: value {example!r} (arrow type {t})"
                                      " is not a string", column=name, row=0, value=example)
            enc = col.dictionary_encode()
        if enc.null_count:
            import pyarrow.compute as pc

            row = int(pc.index(pc.is_null(enc), True).as_py())
            raise ValidationError(f"column {name!r} row {row}: value None is null (nulls are "
                                  "not allowed)", column=name, row=row, value=None)
        d = self.vault.dicts[name]
        uniq = np.array(enc.dictionary.to_pylist(), dtype=object)
        d.check_room(uniq)
        mapping = d.encode(uniq) if uniq.size else np.zeros(0, dtype=np.uint32)
        idx = enc.indices.to_numpy(zero_copy_only=False)
        return mapping[idx]


def _open_inputs(paths: list[Any], schema: Schema) -> list[InputFile]:
    strings = tuple(c.name for c in schema.columns if c.is_string)
    if schema.user_type == "string":
        strings = (schema.user_column, *strings)
    # Explicit CSV types from the store's schema (bool, ints, floats by name; strings above).
    types = {c.name: ("bool" if c.type == "bool" else c.type) for c in schema.columns
             if not c.is_string}
    types[schema.time_column] = "int64"
    if schema.user_type == "int64":
        types[schema.user_column] = "int64"
    return [InputFile.open(p, string_columns=strings, column_types=types)
            for p in expand_paths(paths)]


def _partitions(files: list[InputFile], rows_per_partition: int) -> int:
    total = sum(f.rows if f.rows is not None else f.size // _EST_BYTES_PER_ROW[f.kind]
                for f in files)
    return int(min(MAX_PARTITIONS, max(1, -(-total // rows_per_partition))))


def ingest(
    vault: SeqVault,
    paths: list[Any],
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    rows_per_partition: int = DEFAULT_PARTITION_ROWS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    spill_compression: str | None = "auto",
    expired: str = "refuse",
) -> IngestSummary:
    """Ingest files (or directories of files) into `vault`; all or nothing.

    Raises DuplicateIngest when a file's content was ingested before (unless `force`), and
    ValidationError naming file, row group, column and value when data does not fit the
    schema; in both cases nothing is published.

    Rows older than the schema's retention window (`max_age`) would never be read: by default
    (`expired="refuse"`) they fail the ingest like any invalid value; `expired="drop"` leaves
    them out and counts them in `summary.dropped_expired` (docs/design/safety.md).
    """
    if expired not in ("refuse", "drop"):
        raise ValidationError(f"expired: {expired!r} is not 'refuse' or 'drop'",
                              column="expired", value=expired)
    t0 = time.perf_counter()
    summary = IngestSummary()
    files = _open_inputs(list(paths), vault.schema)
    # ---------------------------------------------------------------- fingerprints / ledger
    total_bytes = sum(f.size for f in files)
    summary.input_bytes = total_bytes
    done_bytes = 0
    seen: dict[str, Path] = {}
    plan: list[tuple[bytes, InputFile, dict[str, Any] | None]] = []
    for f in files:
        f.fingerprint = fingerprint(f.path)
        done_bytes += f.size
        if progress:
            progress("fingerprint", done_bytes, total_bytes)
        key = ledger.ledger_key(f.fingerprint, FINGERPRINT_ALG)
        previous = ledger.lookup(vault, key)
        if not force:
            if f.fingerprint in seen:
                raise DuplicateIngest(f"{f.path} has the same content as {seen[f.fingerprint]} "
                                      "given earlier in this ingest (fingerprint "
                                      f"{f.fingerprint[:16]}…); pass --force to load it twice")
            if previous is not None:
                when = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                     time.gmtime(previous["ingested_ns"] / 1e9))
                raise DuplicateIngest(
                    f"{f.path} was already ingested on {when} as {previous['path']!r} "
                    f"({previous['rows']} rows, fingerprint {f.fingerprint[:16]}…); nothing was "
                    "written. Pass --force (force=True) to ingest it again (its events would be "
                    "stored twice)")
        seen[f.fingerprint] = f.path
        plan.append((key, f, previous))
    summary.phases_s["fingerprint"] = time.perf_counter() - t0

    conv = _Converter(vault, expired)
    needed = conv.needed()
    for f in files:  # missing columns fail before any work
        if f.arrow_schema is not None:
            have = list(f.arrow_schema.names)
            missing = [c for c in needed if c not in have]
            if missing:
                raise ValidationError(f"{f.path}: missing column(s) {missing}; the store's "
                                      f"schema needs {needed} (columns in the file: {have})",
                                      column=missing[0])
            summary.ignored_columns.extend(c for c in have if c not in needed
                                           and c not in summary.ignored_columns)

    parts = _partitions(files, rows_per_partition)
    summary.partitions = parts
    total_rows = (sum(int(f.rows or 0) for f in files)
                  if all(f.rows is not None for f in files) else None)
    if spill_compression == "auto":
        spill_compression = _auto_compression(vault.path, files, conv.spill_schema)
    summary.spill_compression = spill_compression or "none"
    bw = vault.bulk_writer()
    spill: Spill | None = None
    try:
        clean_stale(vault.path)
        spill = Spill(vault.path / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}", parts,
                      conv.spill_schema, compression=spill_compression)
        # ------------------------------------------------------------ pass 1: spill
        t1 = time.perf_counter()
        rows_read = 0
        for f in files:
            file_rows = 0
            for b in f.batches(needed, batch_rows):
                rb, users = conv.convert(f, b)
                if vault.schema.user_type == "string":
                    part_ids = partition_of_strings(users, parts)
                else:
                    part_ids = partition_of_ints(users, parts)
                spill.write(rb, part_ids)
                file_rows += b.data.num_rows  # input rows (expired="drop" may spill fewer)
                rows_read += b.data.num_rows
                if progress:
                    progress("read", rows_read, total_rows)
            f.rows = file_rows
        spill.finish()
        summary.dropped_expired = conv.dropped
        summary.spill_bytes = spill.bytes_on_disk()
        summary.phases_s["spill"] = time.perf_counter() - t1
        # ------------------------------------------------------------ pass 2: build
        t2 = time.perf_counter()
        names = [c.name for c in vault.schema.columns]
        written = 0
        for part in range(parts):
            table = spill.read(part)
            spill.drop(part)
            if table.num_rows == 0:
                continue
            written += _build_partition(bw, table, names, vault.schema.user_type == "string")
            del table
            if progress:
                progress("write", written, rows_read - conv.dropped)
        summary.phases_s["build"] = time.perf_counter() - t2
        # ------------------------------------------------------------ commit
        t3 = time.perf_counter()
        items = [(key, ledger.make_entry(path=str(f.path.resolve()), size=f.size,
                                         rows=int(f.rows or 0), kind=f.kind,
                                         fingerprint=f.fingerprint, alg=FINGERPRINT_ALG,
                                         commit_seq=vault.seq + 1, previous=prev))
                 for key, f, prev in plan]
        # bw.events also counts stored events merged into touched users; report only new ones.
        summary.events, summary.users = written, bw.users
        summary.bytes_written = bw.bytes_written
        bw.commit(ledger=items)
        summary.commit_seq = vault.seq
        summary.phases_s["commit"] = time.perf_counter() - t3
    except BaseException:
        bw.abort()
        raise
    finally:
        if spill is not None:
            spill.remove()
    summary.files = [{"path": str(f.path), "kind": f.kind, "rows": f.rows, "bytes": f.size,
                      "fingerprint": f"{FINGERPRINT_ALG}:{f.fingerprint}"} for f in files]
    width = 8 + sum(4 if c.is_string else c.dtype.itemsize for c in vault.schema.columns)
    summary.raw_bytes = summary.events * width
    summary.compression_ratio = (summary.raw_bytes / summary.bytes_written
                                 if summary.bytes_written else 0.0)
    summary.elapsed_s = time.perf_counter() - t0
    summary.events_per_s = summary.events / summary.elapsed_s if summary.elapsed_s else 0.0
    summary.peak_rss_bytes = peak_rss_bytes()
    return summary


def _auto_compression(store: Path, files: list[InputFile], spill_schema: Any) -> str | None:
    """No compression (about 10 % less CPU) while the spill would take under a quarter of the
    free disk space; LZ4 (about 3x smaller spill files) otherwise."""
    import shutil

    width = 0
    for f in spill_schema:
        try:
            width += f.type.bit_width // 8
        except ValueError:  # strings (string user ids): guess
            width += 16
    rows = sum(f.rows if f.rows is not None else f.size // _EST_BYTES_PER_ROW[f.kind]
               for f in files)
    return None if rows * width < shutil.disk_usage(store).free // 4 else "lz4"


def _build_partition(bw: Any, table: Any, names: list[str], string_users: bool,
                     fast: bool = True) -> int:
    """Sort one partition by (user, ts), stable (input order on ties), and add each user.

    Small users new to the store are encoded together by the vectorised fast path; users
    with long histories (several segments) or events already stored go through
    `BulkWriter.add`, which merges and cuts segments."""
    vault = bw.engine.manifest  # schema, index, settings
    ts = table.column("ts").to_numpy()
    ucol = table.column("user")
    if string_users:
        enc = ucol.combine_chunks().dictionary_encode()
        user_idx = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        uniq = enc.dictionary.to_pylist()
    else:
        user_idx = ucol.to_numpy()
    order = np.lexsort((ts, user_idx))  # stable: ties keep spill (= input) order
    u_sorted = user_idx[order]
    ts = ts[order]
    cols = {n: table.column(n).to_numpy()[order] for n in names}
    starts = np.concatenate(([0], np.flatnonzero(u_sorted[1:] != u_sorted[:-1]) + 1))
    ends = np.append(starts[1:], u_sorted.size)
    counts = ends - starts
    firsts = u_sorted[starts].tolist()
    keys = [uniq[i] for i in firsts] if string_users else firsts
    small = np.zeros(len(keys), dtype=bool)
    if fast and fastpath.supported(vault.schema):
        limit = min(RECENT_SEGMENT_EVENTS, bw.segment_events)
        small = counts <= limit
        if len(vault.index):  # users the store already holds must be merged: slow path
            for i in np.flatnonzero(small).tolist():
                if vault.index.find(user_hash(key_bytes(keys[i])[1])) >= 0:
                    small[i] = False
    for i in np.flatnonzero(~small).tolist():
        lo, hi = int(starts[i]), int(ends[i])
        bw.add(keys[i], ts[lo:hi], {n: a[lo:hi] for n, a in cols.items()}, encoded=True)
    # Small users in chunks of about FAST_CHUNK_EVENTS, which bounds the encoder's temporaries.
    sel_all = np.flatnonzero(small)
    if sel_all.size:
        key_type = KEY_STRING if string_users else KEY_INT64
        level_default = int(vault.settings["zstd_level"])
        csum = np.cumsum(counts[sel_all])
        cuts = np.searchsorted(csum, np.arange(FAST_CHUNK_EVENTS, int(csum[-1]),
                                               FAST_CHUNK_EVENTS), side="right")
        for sel in np.split(sel_all, cuts):
            if sel.size == 0:
                continue
            sub_counts = counts[sel]
            sub_starts = np.concatenate(([0], np.cumsum(sub_counts)[:-1]))
            rows = np.repeat(starts[sel] - sub_starts, sub_counts) + np.arange(
                int(sub_counts.sum()))
            skeys = [keys[i] for i in sel.tolist()]
            kbytes = [key_bytes(k)[1] for k in skeys]
            fcols = [(c.id, c.type, cols[c.name][rows],
                      c.level if c.level is not None else level_default)
                     for c in vault.schema.columns]
            bw.add_encoded(list(fastpath.encode_users(
                skeys, key_type, kbytes, vault.schema.version, ts[rows], fcols, sub_starts,
                sub_counts)))
    return int(u_sorted.size)
