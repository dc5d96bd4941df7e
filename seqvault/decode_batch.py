"""Decoding many small segments at once: the inverse of `segment_batch.encode_many`.

A merge of a million small users decodes a few tiny segments per user; decoding them one by one
(`segment.decode_columns`) costs a header parse, a checksum and a handful of numpy calls per
column per segment — about 300 µs a segment here, far more than their bytes. Here every step
runs over all segments of one layout (same column count and key length) at once: the headers
are numpy records, the checksums go through `crc_many`, and CONST / FOR / DELTA / RAW / BITPACK
payloads (shuffled or not) are undone in whole-array operations; only zstd payloads are
decompressed one by one (small segments rarely have any).

Every checksum is verified, as `decode_columns` does: a bad segment raises CorruptionError
naming its index in the batch (the caller names the file). Segments of mixed layouts, or
encodings this module does not know, return None: the caller decodes those one by one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .crc_many import crc_ranges, crc_rows, gather_rows
from .encoding import (
    ENC_BITPACK,
    ENC_CONST,
    ENC_DELTA,
    ENC_FOR,
    ENC_RAW,
    FLAG_SHUFFLE,
    FLAG_ZSTD,
    decompressor,
)
from .errors import CorruptionError
from .segment import CRC, FIXED_SIZE, FORMAT_VERSION, MAGIC, TIME_COLUMN_ID
from .segment_batch import header_dtype

_U64 = np.uint64


class Decoded:
    """Segment s's events are rows starts[s] : starts[s] + counts[s] of `ts` and of each
    column in `cols` (by column id); `keys[s]` is its key bytes (int64 keys: 8 bytes)."""

    def __init__(self, counts: np.ndarray, keys: np.ndarray, ts: np.ndarray,
                 cols: dict[int, np.ndarray]) -> None:
        self.counts, self.keys, self.ts, self.cols = counts, keys, ts, cols
        self.starts = np.zeros(counts.size, dtype=np.int64)
        np.cumsum(counts[:-1], out=self.starts[1:])


def decode_many(buf: bytes, offsets: np.ndarray, lengths: np.ndarray,
                columns: list[tuple[int, np.dtype[Any]]]) -> Decoded | None:
    """Decode segments buf[offsets[s] : offsets[s] + lengths[s]] (the time column and
    `columns`: (col_id, dtype; string columns as uint32 codes)), or None when they are not
    all of one layout holding exactly those columns in that order."""
    data = np.frombuffer(buf, dtype=np.uint8)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = offsets.size
    if n == 0 or int(lengths.min()) < FIXED_SIZE + CRC.size:
        return None
    ncols = len(columns) + 1
    fixed = gather_rows(data, offsets, FIXED_SIZE)
    key_lens = fixed[:, 18].astype(np.int64) | (fixed[:, 19].astype(np.int64) << 8)
    key_len = int(key_lens[0])
    if bool((key_lens != key_len).any()):
        return None
    dt = header_dtype(key_len, ncols)
    size = dt.itemsize
    if int(lengths.min()) < size:
        return None
    rows = gather_rows(data, offsets, size)
    h = rows.view(dt).reshape(n)
    if bool((h["magic"] != MAGIC).any()) or bool((h["ncols"] != ncols).any()):
        return None  # damaged, or another layout: the one-by-one path says which
    bad = (h["version"] < 1) | (h["version"] > FORMAT_VERSION)
    bad |= crc_rows(rows[:, :-CRC.size]) != h["crc"]
    d = h["dir"]
    want_ids = np.array([TIME_COLUMN_ID] + [c for c, _dt in columns])
    if bool((d["col_id"] != want_ids).any()):
        return None
    stored = d["stored_len"].astype(np.int64)
    bad |= size + stored.sum(axis=1) != lengths
    if bool(bad.any()):
        raise CorruptionError(f"segment {int(np.flatnonzero(bad)[0])} of the batch: bad header "
                              "(checksum, version or lengths)")
    pay = offsets[:, None] + size + np.concatenate(
        (np.zeros((n, 1), dtype=np.int64), np.cumsum(stored, axis=1)[:, :-1]), axis=1)
    counts = h["count"].astype(np.int64)
    out: dict[int, np.ndarray] = {}
    ts: np.ndarray | None = None
    for j, dtype in enumerate([np.dtype(np.int64)] + [dt_ for _c, dt_ in columns]):
        e = d[:, j]
        crc = crc_ranges(data, pay[:, j], stored[:, j])
        if bool((crc != e["crc"]).any()):
            s = int(np.flatnonzero(crc != e["crc"])[0])
            raise CorruptionError(f"segment {s} of the batch: checksum mismatch in column "
                                  f"{int(want_ids[j])}")
        vals = _column(data, pay[:, j], stored[:, j], e, counts, dtype, delta=j == 0)
        if vals is None:
            return None
        if j == 0:
            ts = vals
        else:
            out[int(want_ids[j])] = vals
    assert ts is not None
    keys = h["key"]
    return Decoded(counts, keys, ts, out)


def _column(data: np.ndarray, starts: np.ndarray, stored: np.ndarray, e: np.ndarray,
            counts: np.ndarray, dtype: np.dtype[Any], *, delta: bool) -> np.ndarray | None:
    """One column of every segment, concatenated (None: an encoding not handled here)."""
    enc = e["enc"].astype(np.int64)
    flags = e["flags"].astype(np.int64)
    width = e["width"].astype(np.int64)
    raw_len = e["raw_len"].astype(np.int64)
    param = e["param"].astype(_U64)
    n = counts.size
    # Payload bytes as encoded (zstd undone one by one: only larger segments have it).
    zipped = np.flatnonzero(flags & FLAG_ZSTD)
    if zipped.size:
        view = data.data  # a memoryview of the array
        parts: list[bytes | memoryview] = []
        src = np.zeros(n, dtype=np.int64)
        pos = 0
        dec = decompressor()
        for s in range(n):  # rare: a loop only when some segment is compressed
            a, ln = int(starts[s]), int(stored[s])
            if flags[s] & FLAG_ZSTD:
                try:
                    raw = dec.decompress(view[a:a + ln], max_output_size=int(raw_len[s]))
                except Exception as exc:
                    raise CorruptionError(f"segment {s} of the batch: column does not "
                                          f"decode: {exc}") from exc
                if len(raw) != int(raw_len[s]):
                    raise CorruptionError(f"segment {s} of the batch: decompressed "
                                          f"{len(raw)} bytes, header says {int(raw_len[s])}")
                parts.append(raw)
            else:
                parts.append(view[a:a + ln])
            src[s] = pos
            pos += len(parts[-1])
        data = np.frombuffer(b"".join(parts), dtype=np.uint8)
        starts = src
    elif bool((raw_len != stored).any()):
        raise CorruptionError("a column's stored length differs from its raw length without "
                              "compression")
    seg_of = np.repeat(np.arange(n), counts)
    rank = np.arange(seg_of.size, dtype=np.int64) - np.repeat(
        np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    out = np.zeros(seg_of.size, dtype=_U64)
    const = enc == ENC_CONST
    if delta:
        if bool((~const & (enc != ENC_DELTA)).any()):
            return None
        m = np.maximum(counts - 1, 0)
        mine = ~const[seg_of] & (rank > 0)
        zz = _gather(data, starts, width, flags, m, seg_of[mine], rank[mine] - 1)
        d = (zz >> _U64(1)).view(np.int64) ^ -(zz & _U64(1)).view(np.int64)
        steps = np.zeros(seg_of.size, dtype=np.int64)
        steps[mine] = d
        first = rank == 0
        steps[first] = param[seg_of[first]].view(np.int64)
        with np.errstate(over="ignore"):
            run = np.cumsum(steps)
            base = run[first] - steps[first]
            vals = run - np.repeat(base, counts)
        vals[const[seg_of]] = param[seg_of[const[seg_of]]].view(np.int64)
        return vals
    kind = dtype.kind
    if kind == "b":
        if bool((enc != ENC_BITPACK).any()):
            return None
        byte = data[starts[seg_of] + rank // 8].astype(np.int64)
        return ((byte >> (7 - rank % 8)) & 1).astype(bool)
    if kind == "f":
        if bool((enc != ENC_RAW).any()):
            return None
        bits = _gather(data, starts, width, flags, counts, seg_of, rank)
        w = dtype.itemsize
        return bits.astype(f"<u{w}").view(dtype.newbyteorder("<")).astype(dtype)
    if bool((~const & (enc != ENC_FOR)).any()):
        return None
    rows = ~const[seg_of]
    off = _gather(data, starts, width, flags, counts, seg_of[rows], rank[rows])
    with np.errstate(over="ignore"):
        out[rows] = param[seg_of[rows]] + off
    out[~rows] = param[seg_of[~rows]]
    if kind == "i":
        return out.view(np.int64).astype(dtype)
    return out.astype(dtype)


def _gather(data: np.ndarray, starts: np.ndarray, width: np.ndarray, flags: np.ndarray,
            m: np.ndarray, seg: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Value i of segment seg from payloads of `m` values of `width` bytes, byte-plane
    shuffled where flagged (byte p of value i at p*m + i) or not (at i*width + p)."""
    out = np.zeros(seg.size, dtype=_U64)
    w = width[seg]
    shuffled = (flags[seg] & FLAG_SHUFFLE) != 0
    step = np.where(shuffled, m[seg], 1)
    pos = starts[seg] + np.where(shuffled, i, i * w)
    for p in range(8):
        sel = w > p
        if not bool(sel.any()):
            break
        out[sel] |= data[pos[sel] + p * step[sel]].astype(_U64) << _U64(8 * p)
    return out
