"""Segment format: one user's events, column by column. Pure encode/decode, no I/O.

The byte layout is specified in docs/format/segment.md; the names below follow its field table.
A reader decompresses only the columns it is asked for, but always verifies the header checksum
and the checksum of every column it decodes: a segment that fails is never served
(CorruptionError), it is not "mostly" read.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import native
from .encoding import DEFAULT_LEVEL, EncodedColumn, decode_column, encode_column
from .errors import CorruptionError, FormatVersionError

MAGIC = b"SVSG"
FORMAT_VERSION = 1
TIME_COLUMN_ID = 0

FIXED_HEADER = struct.Struct("<4sHHIIBBHqq")  # magic, version, ncols, schema_version, count, key_type,
#                                         flags, key_len, min_ts, max_ts   (36 bytes)
DIR_ENTRY = struct.Struct("<HBBBBHIIIQI")  # col_id, encoding, flags, width, dtype_code, reserved,
#                                       raw_len, stored_len, crc32, param, reserved  (32 bytes)
CRC = struct.Struct("<I")
FIXED_SIZE = FIXED_HEADER.size
DIR_SIZE = DIR_ENTRY.size

KEY_INT64 = 0
KEY_STRING = 1

DTYPE_CODES: dict[str, int] = {
    "bool": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "uint8": 6, "uint16": 7,
    "uint32": 8, "uint64": 9, "float32": 10, "float64": 11, "string": 12,
}
_CODE_DTYPES = {code: np.dtype(np.uint32 if name == "string" else name)
                for name, code in DTYPE_CODES.items()}


def dtype_of(code: int) -> np.dtype[Any] | None:
    """The numpy dtype of a directory entry's dtype_code (None for an unknown code)."""
    return _CODE_DTYPES.get(code)


def key_bytes(key: int | str) -> tuple[int, bytes]:
    """The canonical bytes of a user key (also what the index hashes)."""
    if isinstance(key, str):
        return KEY_STRING, key.encode("utf-8")
    return KEY_INT64, int(key).to_bytes(8, "little", signed=True)


def key_from_bytes(key_type: int, raw: bytes) -> int | str:
    if key_type == KEY_STRING:
        return raw.decode("utf-8")
    return int.from_bytes(raw, "little", signed=True)


@dataclass(frozen=True)
class ColumnEntry:
    col_id: int
    encoding: int
    flags: int
    width: int
    dtype_code: int
    raw_len: int
    stored_len: int
    crc: int
    param: int
    offset: int  # from the start of the segment


@dataclass(frozen=True)
class SegmentHeader:
    version: int
    schema_version: int
    count: int
    key_type: int
    key: bytes
    min_ts: int
    max_ts: int
    columns: dict[int, ColumnEntry]
    size: int  # header bytes, payloads start here


def encode_segment(
    key: int | str,
    schema_version: int,
    ts: np.ndarray,
    columns: Iterable[tuple[int, str, np.ndarray, int | None]],
) -> bytes:
    """Encode one user's events. `ts` must be sorted ascending (ties in arrival order);
    `columns` yields (col_id, type name, values, zstd level or None) in the same row order."""
    key_type, kbytes = key_bytes(key)
    count = int(ts.size)
    if count and bool((np.diff(ts) < 0).any()):
        raise ValueError("segment timestamps must be sorted ascending")
    encoded: list[tuple[int, int, EncodedColumn]] = [
        (TIME_COLUMN_ID, DTYPE_CODES["int64"], encode_column(ts.astype(np.int64, copy=False), delta=True))
    ]
    for col_id, type_name, values, level in columns:
        if values.size != count:
            raise ValueError(f"column {col_id} has {values.size} values, segment has {count}")
        encoded.append((col_id, DTYPE_CODES[type_name],
                        encode_column(values, level=DEFAULT_LEVEL if level is None else level)))
    min_ts = int(ts[0]) if count else 0
    max_ts = int(ts[-1]) if count else 0
    head = bytearray(FIXED_HEADER.pack(MAGIC, FORMAT_VERSION, len(encoded), schema_version, count,
                                 key_type, 0, len(kbytes), min_ts, max_ts))
    head += kbytes
    for col_id, dcode, enc in encoded:
        head += DIR_ENTRY.pack(col_id, enc.encoding, enc.flags, enc.width, dcode, 0, enc.raw_len,
                          len(enc.data), zlib.crc32(enc.data), enc.param, 0)
    head += CRC.pack(zlib.crc32(head))
    return bytes(head) + b"".join(enc.data for _, _, enc in encoded)


def header_size(buf: bytes | memoryview) -> int:
    """The header's length (fixed part, key, directory, checksum) from its first FIXED_SIZE
    bytes, unchecked: how much to read to get the key (`read_key`)."""
    if len(buf) < FIXED_SIZE:
        return FIXED_SIZE + CRC.size
    fields = FIXED_HEADER.unpack_from(buf, 0)
    ncols, key_len = fields[2], fields[7]
    return FIXED_SIZE + key_len + ncols * DIR_SIZE + CRC.size


def read_key(buf: bytes | memoryview, *, where: str = "segment") -> tuple[int, bytes]:
    """(key_type, key bytes) of a segment from its header alone (`buf` holds at least
    `header_size` bytes), after the header checks: what listing users needs, without reading
    or checking the columns."""
    if len(buf) < FIXED_SIZE + CRC.size:
        raise CorruptionError(f"{where}: {len(buf)} bytes is shorter than a segment header")
    (magic, version, _ncols, _sv, _count, key_type, _flags, key_len, _lo,
     _hi) = FIXED_HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CorruptionError(f"{where}: bad magic {bytes(magic)!r} (expected {MAGIC!r})")
    if version > FORMAT_VERSION:
        raise FormatVersionError(f"{where}: segment format version {version} is newer than this "
                                 f"SeqVault reads ({FORMAT_VERSION}); upgrade seqvault")
    size = header_size(buf)
    if len(buf) < size:
        raise CorruptionError(f"{where}: header needs {size} bytes, got {len(buf)}")
    (crc,) = CRC.unpack_from(buf, size - CRC.size)
    if zlib.crc32(buf[: size - CRC.size]) != crc:
        raise CorruptionError(f"{where}: header checksum mismatch")
    return key_type, bytes(buf[FIXED_SIZE : FIXED_SIZE + key_len])


def parse_header(buf: bytes | memoryview, *, where: str = "segment") -> SegmentHeader:
    """Parse and verify a segment header (magic, version, lengths, header checksum)."""
    if len(buf) < FIXED_SIZE + CRC.size:
        raise CorruptionError(f"{where}: {len(buf)} bytes is shorter than a segment header")
    (magic, version, ncols, schema_version, count, key_type, _flags, key_len, min_ts,
     max_ts) = FIXED_HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CorruptionError(f"{where}: bad magic {bytes(magic)!r} (expected {MAGIC!r})")
    if version > FORMAT_VERSION:
        raise FormatVersionError(f"{where}: segment format version {version} is newer than this "
                                 f"SeqVault reads ({FORMAT_VERSION}); upgrade seqvault")
    if version < 1:
        raise CorruptionError(f"{where}: segment format version {version} is invalid")
    size = FIXED_SIZE + key_len + ncols * DIR_SIZE + CRC.size
    if len(buf) < size:
        raise CorruptionError(f"{where}: header needs {size} bytes, extent has {len(buf)}")
    (crc,) = CRC.unpack_from(buf, size - CRC.size)
    if zlib.crc32(buf[: size - CRC.size]) != crc:
        raise CorruptionError(f"{where}: header checksum mismatch")
    key = bytes(buf[FIXED_SIZE : FIXED_SIZE + key_len])
    cols: dict[int, ColumnEntry] = {}
    offset = size
    pos = FIXED_SIZE + key_len
    for _ in range(ncols):
        (col_id, enc, flags, width, dcode, _r1, raw_len, stored_len, ccrc, param,
         _r2) = DIR_ENTRY.unpack_from(buf, pos)
        pos += DIR_SIZE
        cols[col_id] = ColumnEntry(col_id, enc, flags, width, dcode, raw_len, stored_len, ccrc,
                                   param, offset)
        offset += stored_len
    if offset != len(buf):
        raise CorruptionError(f"{where}: column lengths add up to {offset} bytes, extent has {len(buf)}")
    return SegmentHeader(version, schema_version, count, key_type, key, min_ts, max_ts, cols, size)


def decode_columns(
    buf: bytes | memoryview,
    header: SegmentHeader,
    col_ids: Sequence[int],
    *,
    where: str = "segment",
) -> dict[int, np.ndarray]:
    """Decode the asked-for columns (ids absent from the segment are simply left out)."""
    out: dict[int, np.ndarray] = {}
    view = memoryview(buf)
    for col_id in col_ids:
        entry = header.columns.get(col_id)
        if entry is None:
            continue
        data = view[entry.offset : entry.offset + entry.stored_len]
        if zlib.crc32(data) != entry.crc:
            raise CorruptionError(f"{where}: checksum mismatch in column {col_id}")
        dtype = _CODE_DTYPES.get(entry.dtype_code)
        if dtype is None:
            raise CorruptionError(f"{where}: column {col_id} has unknown dtype code {entry.dtype_code}")
        try:
            out[col_id] = decode_column(entry, data, header.count, dtype)
        except Exception as exc:  # zstd errors, impossible lengths
            raise CorruptionError(f"{where}: column {col_id} does not decode: {exc}") from exc
    return out


def verify_segment(buf: bytes | memoryview, *, where: str = "segment") -> SegmentHeader:
    """Check every checksum and decode every column; raises CorruptionError on the first fault."""
    header = parse_header(buf, where=where)
    cols = decode_columns(buf, header, list(header.columns), where=where)
    ts = cols.get(TIME_COLUMN_ID)
    if ts is None:
        raise CorruptionError(f"{where}: no time column")
    if header.count and (int(ts[0]) != header.min_ts or int(ts[-1]) != header.max_ts):
        raise CorruptionError(f"{where}: min/max ts in header disagree with the time column")
    if header.count > 1 and bool((np.diff(ts) < 0).any()):
        raise CorruptionError(f"{where}: timestamps are not sorted")
    return header


class SegmentInfo(NamedTuple):
    """What a read needs from a verified header (invariant I6 checks key and events)."""

    key: bytes
    events: int  # the header's count (`count` would shadow tuple.count)
    min_ts: int
    max_ts: int


def decode_segment(
    buf: bytes | memoryview,
    col_ids: Sequence[int],
    *,
    where: Any = "segment",
    rows: int | None = None,
) -> tuple[SegmentInfo, dict[int, np.ndarray]]:
    """Verify and decode one segment: the header (I1, I2) and the asked-for columns (I4; ids
    the segment lacks are left out, I5). `rows`: keep only the newest `rows` values of every
    column (the time column too); None keeps all.

    The compiled decoder does it in one call when it is built (`native.native_available()`).
    It accepts only what the reference below accepts; on anything else it hands back a reason
    and the reference decides, so errors are the same on both paths."""
    dec = native.DECODER
    if dec is not None:
        got = dec.decode_segment(buf, tuple(col_ids), -1 if rows is None else rows)
        if not isinstance(got, str):
            key, count, min_ts, max_ts, arrays = got
            return (SegmentInfo(key, count, min_ts, max_ts),
                    {c: a for c, a in zip(col_ids, arrays) if a is not None})
    header = parse_header(buf, where=where)
    cols = decode_columns(buf, header, col_ids, where=where)
    if rows is not None and rows < header.count:
        cols = {c: a[a.size - rows:] for c, a in cols.items()}
    return SegmentInfo(header.key, header.count, header.min_ts, header.max_ts), cols


def decode_segment_aligned(
    buf: bytes | memoryview,
    col_ids: tuple[int, ...],
    rows: int,
    *,
    where: Any = "segment",
) -> tuple[SegmentInfo, tuple[np.ndarray | None, ...]]:
    """`decode_segment` with the columns as a tuple aligned with `col_ids` (None where the
    segment lacks one): what the compiled decoder returns as it is, so a short read builds no
    dict (docs/design/realtime.md, "Short reads"). Same checks and errors."""
    dec = native.DECODER
    if dec is not None:
        got = dec.decode_segment(buf, col_ids, rows)
        if not isinstance(got, str):
            return SegmentInfo(got[0], got[1], got[2], got[3]), got[4]
    info, cols = decode_segment(buf, col_ids, where=where, rows=rows)
    return info, tuple(cols.get(c) for c in col_ids)
