"""CRC-32 (zlib's) of many short byte strings at once, in whole-array numpy operations.

A flush of a million small users needs eight checksums per segment (the header and one per
column). `zlib.crc32` is fast on a long buffer, but a Python call per short string costs more
than the checksum itself. CRC-32 is affine over GF(2): for strings of one length L,

    crc32(M) = crc32(R) ^ lin(M ^ R)

where R is any reference string of length L and `lin` is the CRC with zero initial value and
no final xor, which is linear: lin(D) is the xor, over the byte positions p, of the
contribution of byte D[p] followed by L - 1 - p zero bytes. Those contributions are 256-entry
tables, one per distance to the end (`_table`). So the checksums of a U × L matrix of rows are
one zlib call for the reference row and one table gather per byte position where some row
differs from it — positions where every row agrees cost nothing, which is most of a segment
header. The tests compare every result with `zlib.crc32`.
"""

from __future__ import annotations

import importlib
import os
import zlib
from types import ModuleType

import numpy as np


def load_kernel(*, honour_env: bool = True) -> ModuleType | None:
    """The compiled kernel (seqvault/native_crc.c), or None when it is not built or switched off
    (`SEQVAULT_NATIVE=0`, as for the decoder). Same answers either way; tests run both."""
    if honour_env and os.environ.get("SEQVAULT_NATIVE", "1") == "0":
        return None
    try:  # by name, as native.py does (the extension has no .py source for import-linter)
        return importlib.import_module(f"{__package__}.native_crc")
    except ImportError:
        return None


# The one a call uses: tests set it to None for the numpy reference path.
KERNEL: ModuleType | None = load_kernel()

_T0 = np.array([zlib.crc32(bytes([b])) ^ zlib.crc32(b"\0") for b in range(256)], dtype=np.uint32)
_tables: list[np.ndarray] = [_T0]  # _tables[d][b]: lin(byte b followed by d zero bytes)
_MATRIX_MAX_LEN = 512  # longer strings: zlib per string (their checksum dominates the call)
_MATRIX_MIN_ROWS = 16  # fewer rows of one length: zlib per string


def _table(d: int) -> np.ndarray:
    """Contributions of one byte followed by `d` zero bytes (grown on first use)."""
    while len(_tables) <= d:
        prev = _tables[-1]
        # One more zero byte through the linear CRC register: x -> T0[x & 0xff] ^ (x >> 8).
        _tables.append(_T0[prev & 0xFF] ^ (prev >> np.uint32(8)))
    return _tables[d]


def crc_rows(rows: np.ndarray) -> np.ndarray:
    """zlib.crc32 of every row of a 2-D uint8 array (uint32 per row)."""
    n, length = rows.shape
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    if KERNEL is not None:
        out = np.empty(n, dtype=np.uint32)
        KERNEL.crc_rows(np.ascontiguousarray(rows, dtype=np.uint8), n, length, out)
        return out
    ref = rows[0]
    out = np.full(n, zlib.crc32(ref.tobytes()), dtype=np.uint32)
    if n == 1 or length == 0:
        return out
    diff = rows ^ ref
    varying = np.flatnonzero(diff.any(axis=0))
    if varying.size == 0:
        return out
    cols = np.ascontiguousarray(diff[:, varying].T)  # one contiguous row per varying position
    for p, col in zip(varying.tolist(), cols):
        out ^= _table(length - 1 - p)[col]
    return out


def crc_ranges(buf: np.ndarray | bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """zlib.crc32 of buf[starts[i] : starts[i] + lengths[i]] for every i (uint32 array).
    Ranges of one length are checksummed together (`crc_rows`); long ranges, and lengths
    shared by only a few ranges, go through zlib one by one."""
    data = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, bytes | bytearray) else buf
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.zeros(starts.size, dtype=np.uint32)
    if starts.size == 0:
        return out
    if KERNEL is not None:
        KERNEL.crc_ranges(np.ascontiguousarray(data, dtype=np.uint8), np.ascontiguousarray(starts),
                          np.ascontiguousarray(lengths), out)
        return out
    uniq, inverse, counts = np.unique(lengths, return_inverse=True, return_counts=True)
    view = data.data  # a memoryview of the array
    for k, (length, count) in enumerate(zip(uniq.tolist(), counts.tolist())):
        sel = np.flatnonzero(inverse == k)
        if length == 0:
            out[sel] = 0  # crc32(b"") == 0
        elif length > _MATRIX_MAX_LEN or count < _MATRIX_MIN_ROWS:
            crc32 = zlib.crc32
            out[sel] = [crc32(view[s:s + length]) for s in starts[sel].tolist()]
        else:
            rows = data[starts[sel][:, None] + np.arange(length)]
            out[sel] = crc_rows(rows)
    return out


def copy_ranges(src: bytes | np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                dst: np.ndarray, at: np.ndarray) -> None:
    """dst[at[i] : at[i] + lengths[i]] = src[starts[i] : starts[i] + lengths[i]] for every i
    (`dst` a writable uint8 array). The compiled kernel when built; else a slice copy each."""
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    at = np.ascontiguousarray(at, dtype=np.int64)
    if KERNEL is not None:
        KERNEL.copy_ranges(src, starts, lengths, dst, at)
        return
    data = np.frombuffer(src, dtype=np.uint8) if isinstance(src, bytes | bytearray) else src
    for s, n, a in zip(starts.tolist(), lengths.tolist(), at.tolist()):
        if s < 0 or n < 0 or a < 0 or s + n > data.size or a + n > dst.size:
            raise ValueError(f"copy_ranges: range {s} + {n} to {a} is outside the buffers")
        dst[a:a + n] = data[s:s + n]


def gather_rows(data: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """The (n, length) uint8 matrix of data[starts[i] : starts[i] + length]: the segment
    headers of a bulk read. numpy's 2-D gather builds an int64 index per byte (~2 GB of index
    for a million 270-byte headers); the kernel copies each row."""
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    if KERNEL is None:
        return data[starts[:, None] + np.arange(length)]
    out = np.empty((starts.size, length), dtype=np.uint8)
    KERNEL.copy_ranges(data, starts, np.full(starts.size, length, dtype=np.int64), out,
                       np.arange(starts.size, dtype=np.int64) * length)
    return out
