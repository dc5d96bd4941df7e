"""Vectorised segment encoding for many small users at once (ingest; flush and merge next).

`seqvault.segment.encode_segment` encodes one user at a time; each column costs a handful of
numpy calls, which dominates when a partition holds hundreds of thousands of users with a few
dozen events each (the common, heavy-tailed case). Here every transform of the column codec
(CONST, FOR, DELTA + zigzag, width narrowing, byte-plane shuffle) is computed for all users of
a partition in whole-array numpy operations; only the final per-user steps (zstd when the
payload is >= 64 bytes, CRC-32, the header) run per user.

The output is byte-for-byte what `encode_segment` produces for the same user (the format is
docs/format/segment.md); tests/test_ingest_fastpath.py checks that equality on random data, so
a change to the codec that is not mirrored here fails the tests rather than the files.
Only integer columns (and dictionary-coded strings) take this path; schemas with float or
bool columns use `BulkWriter.add` for every user.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from .encoding import (
    DEFAULT_LEVEL,
    ENC_CONST,
    ENC_DELTA,
    ENC_FOR,
    FLAG_SHUFFLE,
    FLAG_ZSTD,
    WIDTH_DTYPES,
    compressor,
    shuffle_helps,
)
from .segment import (
    CRC,
    DIR_ENTRY,
    DTYPE_CODES,
    FIXED_HEADER,
    FORMAT_VERSION,
    MAGIC,
    TIME_COLUMN_ID,
)

_ZSTD_MIN = 64  # encode_column tries zstd only from this many payload bytes
_U64 = np.uint64


def supported(schema: Any) -> bool:
    return all(c.is_string or c.dtype.kind in "iu" for c in schema.columns)


def _widths(max_off: np.ndarray) -> np.ndarray:
    w = np.full(max_off.shape, 8, dtype=np.int64)
    w[max_off < _U64(1 << 32)] = 4
    w[max_off < _U64(1 << 16)] = 2
    w[max_off < _U64(1 << 8)] = 1
    return w


class _Column:
    """One column of every selected user: per-user encoding/width/param and the concatenated
    (shuffled) payloads, with per-user offsets into them."""

    enc: np.ndarray
    width: np.ndarray
    param: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    payload: bytes

    def __init__(self, col_id: int, dcode: int, level: int) -> None:
        self.col_id, self.dcode, self.level = col_id, dcode, level
        self.plain: dict[int, bytes] = {}  # user → unshuffled payload, where shuffle loses

    def choose_shuffle(self, stored: np.ndarray) -> None:
        """Mirror encode_column's `shuffle_helps`: for users with >= 64 stored values of
        width >= 2, keep the payload unshuffled when that compresses smaller."""
        view = memoryview(self.payload)
        for u in np.flatnonzero((stored >= 64) & (self.width >= 2)).tolist():
            w, m, off = int(self.width[u]), int(stored[u]), int(self.offsets[u])
            planes = np.frombuffer(view[off:off + w * m], dtype=np.uint8).reshape(w, m)
            narrowed = np.ascontiguousarray(planes.T).reshape(-1).view(WIDTH_DTYPES[w])
            if not shuffle_helps(narrowed, w, self.level):
                self.plain[u] = narrowed.tobytes()

    def data(self, u: int) -> bytes | memoryview:
        plain = self.plain.get(u)
        if plain is not None:
            return plain
        off = int(self.offsets[u])
        return memoryview(self.payload)[off:off + int(self.lengths[u])]


def _scatter(col: _Column, values_u64: np.ndarray, user_of: np.ndarray, rank: np.ndarray,
             m: np.ndarray) -> None:
    """Write each value's low `width` bytes into its user's payload, byte-plane shuffled:
    byte p of value i of user u lands at offsets[u] + p * m[u] + i."""
    total = int(col.lengths.sum())
    out = np.zeros(total, dtype=np.uint8)
    # int32 positions when they fit (always, for the chunk sizes ingest uses): half the traffic
    itype = np.int32 if total < (1 << 31) else np.int64
    w_ev = col.width[user_of]
    le = values_u64.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    offsets = col.offsets.astype(itype)
    m_i = m.astype(itype)
    rank_i = rank.astype(itype)
    for w in (1, 2, 4, 8):
        sel = np.flatnonzero(w_ev == w)
        if sel.size == 0:
            continue
        u = user_of[sel]
        first = offsets[u] + rank_i[sel]
        if w == 1:
            out[first] = le[sel, 0]
            continue
        step = m_i[u]
        bytes_w = le[sel, :w]
        for p in range(w):
            out[first] = bytes_w[:, p]
            if p + 1 < w:
                first += step
    col.payload = out.tobytes()


def _int_column(col: _Column, values: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                user_of: np.ndarray, rank: np.ndarray) -> None:
    """CONST or FOR (frame of reference) for every user, as encode_column does."""
    kind = values.dtype.kind
    vmin = np.minimum.reduceat(values, starts)
    vmax = np.maximum.reduceat(values, starts)
    const = vmin == vmax
    if kind == "u":
        off = values.astype(_U64) - vmin.astype(_U64)[user_of]
        base_bits = vmin.astype(_U64)
    else:
        base_bits = vmin.astype(np.int64).view(_U64)
        off = values.astype(np.int64).view(_U64) - base_bits[user_of]
    max_off = np.maximum.reduceat(off, starts)
    col.width = np.where(const, 0, _widths(max_off))
    col.enc = np.where(const, ENC_CONST, ENC_FOR)
    col.param = base_bits  # CONST stores the value, FOR the minimum: both are vmin
    col.lengths = col.width * counts
    col.offsets = np.concatenate(([0], np.cumsum(col.lengths)[:-1])).astype(np.int64)
    _scatter(col, off, user_of, rank, counts)
    col.choose_shuffle(counts)


def _time_column(col: _Column, ts: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 counts: np.ndarray, user_of: np.ndarray, rank: np.ndarray) -> None:
    """CONST when a user's timestamps are all equal, else DELTA of zigzagged differences."""
    first, last = ts[starts], ts[ends - 1]
    const = first == last
    d = np.zeros(ts.size, dtype=np.int64)
    d[1:] = ts[1:] - ts[:-1]
    d[starts] = 0  # no difference across a user boundary
    zz = ((d << 1) ^ (d >> 63)).view(_U64)
    max_zz = np.maximum.reduceat(zz, starts)
    m = counts - 1
    col.width = np.where(const, 0, _widths(max_zz))
    col.enc = np.where(const, ENC_CONST, ENC_DELTA)
    col.param = first.astype(np.int64).view(_U64)
    col.lengths = col.width * m
    col.offsets = np.concatenate(([0], np.cumsum(col.lengths)[:-1])).astype(np.int64)
    keep = rank > 0  # the first value of each user lives in the header (param)
    sub = _Column(col.col_id, col.dcode, col.level)
    sub.width, sub.offsets, sub.lengths = col.width, col.offsets, col.lengths
    idx = np.flatnonzero(keep)
    _scatter(sub, zz[idx], user_of[idx], rank[idx] - 1, m)
    col.payload = sub.payload
    col.choose_shuffle(m)


def encode_users(keys: list[Any], key_type: int, kbytes: list[bytes], schema_version: int,
                 ts: np.ndarray, cols: list[tuple[int, str, np.ndarray, int]],
                 starts: np.ndarray, counts: np.ndarray) -> Iterator[tuple[Any, bytes, int, int,
                                                                           int]]:
    """Segments of many users whose events are contiguous and time-sorted in `ts` / `cols`
    (user u owns rows starts[u] : starts[u] + counts[u]; every count >= 1).

    `cols` holds (col_id, type name, values, zstd level). Yields (key, segment bytes, count,
    min_ts, max_ts) per user, in order.
    """
    n_users = len(keys)
    if n_users == 0:
        return
    starts = starts.astype(np.int64)
    counts = counts.astype(np.int64)
    ends = starts + counts
    user_of = np.repeat(np.arange(n_users), counts)
    rank = np.arange(ts.size, dtype=np.int64) - starts[user_of]
    columns: list[_Column] = []
    tcol = _Column(TIME_COLUMN_ID, DTYPE_CODES["int64"], DEFAULT_LEVEL)  # as encode_segment
    _time_column(tcol, ts.astype(np.int64, copy=False), starts, ends, counts, user_of, rank)
    columns.append(tcol)
    for col_id, type_name, values, level in cols:
        c = _Column(col_id, DTYPE_CODES[type_name], level)
        _int_column(c, values, starts, counts, user_of, rank)
        columns.append(c)
    ncols = len(columns)
    zipped = _compress_all(columns)
    mins = ts[starts].tolist()
    maxs = ts[ends - 1].tolist()
    cnt = counts.tolist()
    per_col = []
    for c, z in zip(columns, zipped):
        view = memoryview(c.payload)
        offs, lens = c.offsets.tolist(), c.lengths.tolist()
        widths = c.width.tolist()
        datas: list[bytes | memoryview] = []
        flags: list[int] = []
        for u in range(n_users):
            ln = lens[u]
            zu = z.get(u) if z else None
            shuffle = FLAG_SHUFFLE if widths[u] > 1 and u not in c.plain else 0
            if zu is not None:
                datas.append(zu)
                flags.append(shuffle | FLAG_ZSTD)
            elif u in c.plain:
                datas.append(c.plain[u])
                flags.append(0)
            else:
                datas.append(view[offs[u]:offs[u] + ln] if ln else b"")
                flags.append(shuffle if ln else 0)
        per_col.append((c.col_id, c.dcode, c.enc.tolist(), widths, c.param.tolist(), lens,
                        datas, flags))
    fixed_pack, dir_pack, crc_pack, crc32 = FIXED_HEADER.pack, DIR_ENTRY.pack, CRC.pack, zlib.crc32
    for u in range(n_users):
        kb = kbytes[u]
        head = bytearray(fixed_pack(MAGIC, FORMAT_VERSION, ncols, schema_version, cnt[u],
                                    key_type, 0, len(kb), mins[u], maxs[u]))
        head += kb
        parts: list[bytes | memoryview] = []
        for col_id, dcode, enc, width, param, lens, datas, flags in per_col:
            data = datas[u]
            head += dir_pack(col_id, enc[u], flags[u], width[u], dcode, 0, lens[u], len(data),
                             crc32(data), param[u], 0)
            parts.append(data)
        head += crc_pack(crc32(head))
        yield keys[u], b"".join((head, *parts)), cnt[u], mins[u], maxs[u]


def _compress_all(columns: list[_Column]) -> list[dict[int, bytes]]:
    """zstd every payload of >= 64 bytes (as encode_column does), in one multi-threaded call
    per level; keep a result only when it is smaller. Returns, per column, user → bytes."""
    jobs: list[tuple[int, int, memoryview]] = []
    for ci, c in enumerate(columns):
        lens = c.lengths
        for u in np.flatnonzero(lens >= _ZSTD_MIN).tolist():
            jobs.append((ci, u, memoryview(c.data(u))))
    out: list[dict[int, bytes]] = [{} for _ in columns]
    by_level: dict[int, list[tuple[int, int, memoryview]]] = {}
    for job in jobs:
        by_level.setdefault(columns[job[0]].level, []).append(job)
    for level, items in by_level.items():
        comp = compressor(level)
        results = _compress_many(comp, [bytes(v) for _ci, _u, v in items])
        for (ci, u, v), z in zip(items, results):
            if len(z) < len(v):
                out[ci][u] = z
    return out


def _compress_many(comp: Any, payloads: list[bytes]) -> list[bytes]:
    multi = getattr(comp, "multi_compress_to_buffer", None)
    if multi is None or len(payloads) < 64:
        return [comp.compress(p) for p in payloads]
    result = multi(payloads, threads=-1)
    return [result[i].tobytes() for i in range(len(payloads))]
