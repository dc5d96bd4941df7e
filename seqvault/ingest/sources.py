"""Input files for ingest: discovery, content fingerprints, and streaming record batches.

Parquet is read one row group at a time in bounded batches, so a batch always knows which
row group (and which row of the file) it came from: error messages name them. CSV is streamed
by pyarrow's block reader; JSON lines are cut into blocks at line ends and parsed block by
block (pyarrow's JSON reader has no streaming mode). Heavy imports stay inside functions.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotFound, ValidationError

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
FINGERPRINT_ALG = "blake2b-256"
_READ_CHUNK = 8 << 20
JSON_BLOCK_BYTES = 32 << 20


def kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in (".gz", ".zst", ".bz2"):
        if name.endswith(suffix) and not name.endswith(PARQUET_SUFFIXES):
            name = name[: -len(suffix)]
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(JSON_SUFFIXES):
        return "json"
    return None


def expand_paths(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Files in the order given; a directory contributes its data files in name order
    (recursively, hidden files and `_SUCCESS`-style markers skipped)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and kind_of(q) is not None
                           and not any(part.startswith((".", "_")) for part in
                                       q.relative_to(p).parts))
            if not found:
                raise NotFound(f"{p}: directory holds no Parquet, CSV or JSON lines files")
            out.extend(found)
        elif p.is_file():
            if kind_of(p) is None:
                raise ValidationError(f"{p}: unknown file type (expected .parquet, .csv or "
                                      f".jsonl/.ndjson)", value=str(p))
            out.append(p)
        else:
            raise NotFound(f"{p}: no such file or directory")
    return out


def fingerprint(path: Path) -> str:
    """BLAKE2b-256 of the file's bytes, streamed (hex). The ledger key of the file."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_READ_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Batch:
    """A record batch with where it came from (for error messages)."""

    data: Any  # pyarrow.RecordBatch
    unit: str  # "row group" or "block"
    unit_index: int
    unit_row: int  # row of the batch's first row within its row group / block
    file_row: int  # row of the batch's first row within the file


@dataclass
class InputFile:
    path: Path
    kind: str
    size: int
    rows: int | None  # known up front for Parquet
    arrow_schema: Any = None
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, *, string_columns: tuple[str, ...] = (),
             column_types: dict[str, str] | None = None) -> InputFile:
        """`column_types` (name → Arrow type alias, e.g. "int64", "uint16") types CSV columns
        explicitly: the store's schema, so a bad value fails at its row."""
        kind = kind_of(path)
        assert kind is not None
        size = path.stat().st_size
        if kind == "parquet":
            import pyarrow.parquet as pq

            try:
                meta = pq.ParquetFile(path).metadata
                arrow_schema = pq.read_schema(path)
            except Exception as exc:  # ArrowInvalid: not a Parquet file, truncated footer, ...
                raise ValidationError(f"{path}: cannot read as Parquet: {exc}",
                                      value=str(path)) from exc
            return cls(path, kind, size, meta.num_rows, arrow_schema)
        f = cls(path, kind, size, None)
        f.extra["string_columns"] = string_columns
        f.extra["column_types"] = dict(column_types or {})
        return f

    def column_names(self) -> list[str]:
        if self.arrow_schema is not None:
            return list(self.arrow_schema.names)
        first = next(self.batches(None, 1 << 16), None)
        return list(first.data.schema.names) if first is not None else []

    def batches(self, columns: list[str] | None, batch_rows: int) -> Iterator[Batch]:
        if self.kind == "parquet":
            yield from self._parquet(columns, batch_rows)
        elif self.kind == "csv":
            yield from self._csv(columns)
        else:
            yield from self._json(columns)

    def _parquet(self, columns: list[str] | None, batch_rows: int) -> Iterator[Batch]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        file_row = 0
        for rg in range(pf.num_row_groups):
            rg_row = 0
            for rb in pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=columns,
                                      use_threads=True):
                yield Batch(rb, "row group", rg, rg_row, file_row)
                rg_row += rb.num_rows
                file_row += rb.num_rows

    def _csv(self, columns: list[str] | None) -> Iterator[Batch]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        # Parse with the store's column types, not types inferred per block: a bad value then
        # fails at its own row (pyarrow names the line), instead of turning its whole block
        # into strings that fail at row 0 of the block.
        types = {c: pa.type_for_alias(t) for c, t in self.extra.get("column_types", {}).items()}
        types.update({c: pa.string() for c in self.extra.get("string_columns", ())})
        delimiter = "\t" if self.path.name.lower().rstrip(".gz").endswith(".tsv") else ","
        try:
            reader = pacsv.open_csv(
                self.path,
                read_options=pacsv.ReadOptions(block_size=16 << 20),
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                # Every column is read (a missing one is then reported by name, not by pyarrow).
                convert_options=pacsv.ConvertOptions(column_types=types),
            )
        except pa.ArrowInvalid as exc:
            raise self._csv_error(exc, []) from None
        header = list(reader.schema.names)
        file_row = 0
        i = 0
        while True:
            try:
                rb = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise self._csv_error(exc, header) from None
            yield Batch(rb, "block", i, 0, file_row)
            file_row += rb.num_rows
            i += 1

    def _csv_error(self, exc: Exception, header: list[str]) -> ValidationError:
        """pyarrow's CSV error as a ValidationError naming the line, the data row, the column
        and the value. pyarrow's "Row #N" is the 1-based line number (the header is line 1);
        data rows are 0-based, as in every other ingest error."""
        import re

        text = str(exc)
        if "Empty CSV file" in text:
            return ValidationError(f"{self.path}: the file is empty; a CSV needs a header line "
                                   "naming the columns, then one event per line",
                                   value=str(self.path))
        line_m = re.search(r"Row #(\d+)", text)
        line = int(line_m.group(1)) if line_m else None
        conv = re.search(r"In CSV column #(\d+): .*conversion error to (\w+): invalid value "
                         r"'(.*)'", text)
        cols = re.search(r"Expected (\d+) columns, got (\d+): ?(.*)", text)
        if line is None and (conv or cols):
            # Multi-threaded parsing does not know the line: find it (error path only).
            header, line = self._find_csv_line(
                (int(conv.group(1)), conv.group(3)) if conv else None,
                int(cols.group(1)) if cols else None)
        where = f"{self.path}: line {line} (data row {line - 2})" if line else f"{self.path}"
        row = line - 2 if line else None
        if conv:
            idx, want, value = int(conv.group(1)), conv.group(2), conv.group(3)
            name = header[idx] if idx < len(header) else f"#{idx}"
            return ValidationError(f"{where}: column {name!r}: value {value!r} is not "
                                   f"{'an' if want[:1] in 'aeiou' else 'a'} {want} (the "
                                   f"store's type for {name!r})", column=name,
                                   row=row, value=value)
        if cols:
            return ValidationError(f"{where}: expected {cols.group(1)} fields (the header has "
                                   f"{cols.group(1)} columns), got {cols.group(2)}: "
                                   f"{cols.group(3)[:200]!r}", row=row, value=cols.group(3)[:200])
        return ValidationError(f"{where}: cannot parse as CSV: {text}", row=row)

    def _find_csv_line(self, bad_value: tuple[int, str] | None, width: int | None
                       ) -> tuple[list[str], int | None]:
        """(header, 1-based line) of the first row whose field `bad_value[0]` equals
        `bad_value[1]`, or whose field count is not `width`."""
        import csv
        import io as _io

        import pyarrow as pa

        name = self.path.name.lower()
        delimiter = "\t" if name.endswith((".tsv", ".tsv.gz", ".tsv.zst", ".tsv.bz2")) else ","
        # pyarrow's stream decompresses .gz/.zst/.bz2 by extension, as the CSV reader does.
        stream = pa.input_stream(str(self.path), compression="detect")
        with _io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, [])
            for fields in reader:
                if bad_value is not None:
                    idx, value = bad_value
                    if idx < len(fields) and fields[idx] == value:
                        return header, reader.line_num
                elif width is not None and fields and len(fields) != width:
                    return header, reader.line_num
        return header, None

    def _json(self, columns: list[str] | None) -> Iterator[Batch]:
        import io as _io

        import pyarrow as pa
        import pyarrow.json as pajson

        types = {c: pa.string() for c in self.extra.get("string_columns", ())}
        opts = pajson.ParseOptions(explicit_schema=pa.schema(types) if types else None,
                                   unexpected_field_behavior="infer")
        file_row = 0
        block = 0
        with open(self.path, "rb") as fh:
            rest = b""
            while True:
                chunk = fh.read(JSON_BLOCK_BYTES)
                data = rest + chunk
                if not chunk:
                    rest = b""
                else:
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        rest = data
                        continue
                    data, rest = data[: cut + 1], data[cut + 1:]
                if data.strip():
                    try:
                        table = pajson.read_json(_io.BytesIO(data), parse_options=opts)
                    except Exception as exc:
                        raise ValidationError(f"{self.path}: block {block} (from row {file_row}):"
                                              f" not valid JSON lines: {exc}") from exc
                    if columns:
                        keep = [c for c in columns if c in table.column_names]
                        table = table.select(keep)
                    block_row = 0
                    for rb in table.to_batches():
                        yield Batch(rb, "block", block, block_row, file_row)
                        file_row += rb.num_rows
                        block_row += rb.num_rows
                    block += 1
                if not chunk:
                    break
