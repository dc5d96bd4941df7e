"""Column codecs: pure transforms between numpy arrays and bytes. No I/O here.

Each column of a segment is encoded in two steps (docs/format/segment.md, "Column encodings"):

1. a *transform* that makes integers small — DELTA (timestamps: sorted, so deltas are small),
   FOR (frame of reference: subtract the minimum), CONST (every value equal: nothing stored),
   BITPACK (booleans, 8 per byte) or RAW (floats) — followed by narrowing to the smallest
   unsigned width (1, 2, 4 or 8 bytes) that holds the result;
2. optional byte-shuffle (byte 0 of every value, then byte 1, ...) which groups the mostly-zero
   high bytes so ZSTD finds long runs, then ZSTD — kept only when it makes the column smaller.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

ENC_RAW = 0
ENC_FOR = 1
ENC_DELTA = 2
ENC_BITPACK = 3
ENC_CONST = 4
ENCODING_NAMES = {ENC_RAW: "raw", ENC_FOR: "for", ENC_DELTA: "delta", ENC_BITPACK: "bitpack",
                  ENC_CONST: "const"}

FLAG_SHUFFLE = 1
FLAG_ZSTD = 2

DEFAULT_LEVEL = 3
WIDTH_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")
}

_local = threading.local()


def compressor(level: int) -> zstandard.ZstdCompressor:
    # zstandard objects are not thread-safe; one per thread and level, reused because creating a
    # compression context costs more than compressing a small column.
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=False)
    return comp


def decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = zstandard.ZstdDecompressor()
    return dec


@dataclass(frozen=True)
class EncodedColumn:
    encoding: int
    flags: int
    width: int
    param: int  # base for FOR/DELTA/CONST (stored as i64 bit pattern)
    raw_len: int  # bytes after transform+shuffle, before compression
    data: bytes


def _narrow(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Unsigned array → smallest width that holds its maximum."""
    top = int(values.max()) if values.size else 0
    for width in (1, 2, 4, 8):
        if top < (1 << (8 * width)):
            return values.astype(WIDTH_DTYPES[width], copy=False), width
    raise AssertionError("unreachable: uint64 always fits 8 bytes")


def _shuffle(buf: np.ndarray, width: int) -> bytes:
    """Byte-plane shuffle: byte p of every value, for p = 0 .. width-1 (docs/format/segment.md)."""
    if width == 1:
        return buf.tobytes()
    if width <= 4:
        # Shift-and-mask per byte plane: contiguous passes, ~5x faster than a strided transpose.
        return b"".join((buf >> buf.dtype.type(8 * i)).astype(np.uint8).tobytes()
                        for i in range(width))
    return np.ascontiguousarray(buf.view(np.uint8).reshape(-1, width).T).tobytes()


shuffle_bytes = _shuffle  # the public name (segment_batch's probes)


def _unshuffle(data: bytes, width: int, count: int) -> np.ndarray:
    """Inverse of `_shuffle`; returns the values as the unsigned dtype of `width`."""
    raw = np.frombuffer(data, dtype=np.uint8)
    dtype = WIDTH_DTYPES[width]
    if width == 1:
        return raw
    planes = raw.reshape(width, count)
    if width <= 4:
        out = planes[0].astype(dtype)
        for i in range(1, width):
            out |= planes[i].astype(dtype) << dtype.type(8 * i)
        return out
    out8 = np.empty((count, width), dtype=np.uint8)
    out8[:] = planes.T
    return out8.reshape(-1).view(dtype)


def _as_u64_bits(x: int) -> int:
    return x & 0xFFFF_FFFF_FFFF_FFFF


def _from_u64_bits(x: int) -> int:
    return x - (1 << 64) if x >= (1 << 63) else x


SHUFFLE_PROBE = 4096


def shuffle_helps(narrowed: np.ndarray, width: int, level: int) -> bool:
    """Byte-shuffle only where it helps. It wins for small, smooth values (deltas, dwell times:
    the high bytes become runs of zeros) and loses for high-entropy ids that repeat (item ids
    under a Zipf law: unshuffled, a repeated id is a repeated 3–4 byte string zstd can match;
    measured on the benchmark workload, 3.66 → 2.81 B/event for item_id at level 3). Decided by
    compressing a probe of the first values both ways."""
    if narrowed.size < 64:
        return True
    probe = narrowed[:SHUFFLE_PROBE]
    comp = compressor(level)
    return len(comp.compress(_shuffle(probe, width))) <= len(comp.compress(probe.tobytes()))


def shuffle_or_not(narrowed: np.ndarray, width: int, level: int
                   ) -> tuple[bool, bytes, bytes | None]:
    """`shuffle_helps` and the payload it picks: (shuffled, payload, zstd of the payload or
    None). When the probe is the whole column (at most SHUFFLE_PROBE values) the probe's
    compressed bytes are the column's, so they are returned and not compressed a third time
    (zstd is deterministic for one level: the bytes are the same)."""
    if narrowed.size < 64 or narrowed.size > SHUFFLE_PROBE:
        shuffled = shuffle_helps(narrowed, width, level)
        return shuffled, (_shuffle(narrowed, width) if shuffled else narrowed.tobytes()), None
    comp = compressor(level)
    s_bytes, p_bytes = _shuffle(narrowed, width), narrowed.tobytes()
    s_zip, p_zip = comp.compress(s_bytes), comp.compress(p_bytes)
    if len(s_zip) <= len(p_zip):
        return True, s_bytes, s_zip
    return False, p_bytes, p_zip


def encode_column(values: np.ndarray, *, delta: bool = False, level: int = DEFAULT_LEVEL) -> EncodedColumn:
    """Encode one column (any numeric or bool dtype). `delta=True` for sorted timestamps."""
    n = int(values.size)
    kind = values.dtype.kind
    zipped: bytes | None = None  # the payload's zstd bytes, when the shuffle probe made them
    if kind == "b":
        encoding, width, param = ENC_BITPACK, 1, 0
        payload = np.packbits(values.astype(np.uint8, copy=False)).tobytes()
        shuffled = False
    elif kind in "iu" and n > 0 and bool((values == values[0]).all()):
        # A constant column (very common: scenario, a default-filled column) costs nothing.
        return EncodedColumn(ENC_CONST, 0, 0, _as_u64_bits(int(values[0])), 0, b"")
    elif kind in "iu":
        if delta and n > 0:
            v = values.astype(np.int64, copy=False)
            diffs = np.diff(v)
            # zigzag keeps small negative deltas small (segments are sorted, so they are rare).
            zz = ((diffs << 1) ^ (diffs >> 63)).view(np.uint64)
            narrowed, width = _narrow(zz)
            encoding, param = ENC_DELTA, _as_u64_bits(int(v[0]))
        else:
            if kind == "u":
                base = int(values.min()) if n else 0
                off = (values - values.dtype.type(base)).astype(np.uint64, copy=False)
            else:
                base = int(values.min()) if n else 0
                # int64 subtraction in uint64 space wraps correctly for any span.
                off = values.astype(np.int64, copy=False).view(np.uint64) - np.uint64(_as_u64_bits(base))
            narrowed, width = _narrow(off)
            encoding, param = ENC_FOR, _as_u64_bits(base)
        if width > 1:
            shuffled, payload, zipped = shuffle_or_not(narrowed, width, level)
        else:
            shuffled, payload = False, narrowed.tobytes()
    elif kind == "f":
        width = values.dtype.itemsize
        encoding, param = ENC_RAW, 0
        le = values.astype(values.dtype.newbyteorder("<"), copy=False)
        shuffled = True
        payload = _shuffle(le.view(WIDTH_DTYPES[width]).astype(WIDTH_DTYPES[width], copy=False),
                           width)
    else:
        raise TypeError(f"cannot encode dtype {values.dtype}")
    flags = FLAG_SHUFFLE if shuffled else 0
    raw_len = len(payload)
    data = payload
    if raw_len >= 64:
        compressed = zipped if zipped is not None else compressor(level).compress(payload)
        if len(compressed) < raw_len:
            data = compressed
            flags |= FLAG_ZSTD
    return EncodedColumn(encoding, flags, width, param, raw_len, data)


def decode_column(enc: EncodedColumn | Any, data: bytes | memoryview, count: int,
                  dtype: np.dtype[Any]) -> np.ndarray:
    """Inverse of `encode_column`. `enc` supplies encoding/flags/width/param/raw_len."""
    if enc.flags & FLAG_ZSTD:
        payload = decompressor().decompress(data, max_output_size=enc.raw_len)
        if len(payload) != enc.raw_len:
            raise ValueError(f"decompressed {len(payload)} bytes, header says {enc.raw_len}")
    else:
        payload = bytes(data)
    if enc.encoding == ENC_CONST:
        value = _from_u64_bits(enc.param) if dtype.kind == "i" else enc.param
        return np.full(count, value, dtype=dtype)
    if enc.encoding == ENC_BITPACK:
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=count)
        return bits.astype(np.bool_)
    width = enc.width
    # DELTA stores count-1 differences (the first value is the header's param).
    stored = max(count - 1, 0) if enc.encoding == ENC_DELTA else count
    if width not in WIDTH_DTYPES or len(payload) != width * stored:
        raise ValueError(f"column payload of {len(payload)} bytes does not hold {stored} values "
                         f"of width {width}")
    if enc.flags & FLAG_SHUFFLE:
        narrowed = _unshuffle(payload, width, stored)
    else:
        narrowed = np.frombuffer(payload, dtype=WIDTH_DTYPES[width])
    if enc.encoding == ENC_RAW:
        return narrowed.view(dtype.newbyteorder("<")).astype(dtype, copy=False)
    if enc.encoding == ENC_FOR:
        if width <= dtype.itemsize:
            # value - min fits the dtype's width, so widen once and add the base in place:
            # integer arithmetic wraps modulo 2**bits, which is exactly FOR's arithmetic.
            out = narrowed.astype(dtype)
            base = _from_u64_bits(enc.param) if dtype.kind == "i" else enc.param
            out += dtype.type(base)
            return out
        off = narrowed.astype(np.uint64)
        vals = off + np.uint64(enc.param)
        return vals.view(np.int64).astype(dtype) if dtype.kind == "i" else vals.astype(dtype)
    if enc.encoding == ENC_DELTA:
        if width <= 4:  # zigzag values fit int64 without touching the sign bit
            z = narrowed.astype(np.int64)
            diffs = (z >> 1) ^ -(z & 1)
        else:
            zz = narrowed.astype(np.uint64)
            diffs = (zz >> np.uint64(1)).view(np.int64) ^ -(zz & np.uint64(1)).view(np.int64)
        out = np.empty(count, dtype=np.int64)
        if count:
            out[0] = _from_u64_bits(enc.param)
            np.cumsum(diffs, out=out[1:])
            out[1:] += out[0]
        return out.astype(dtype, copy=False)
    raise ValueError(f"unknown column encoding {enc.encoding}")
