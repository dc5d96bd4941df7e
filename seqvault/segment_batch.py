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
Integer, float and bool columns and dictionary-coded strings take this path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from . import crc_many, native
from .crc_many import copy_ranges, crc_ranges, crc_rows
from .encoding import (
    DEFAULT_LEVEL,
    ENC_BITPACK,
    ENC_CONST,
    ENC_DELTA,
    ENC_FOR,
    ENC_RAW,
    FLAG_SHUFFLE,
    FLAG_ZSTD,
    SHUFFLE_PROBE,
    WIDTH_DTYPES,
    compressor,
    shuffle_bytes,
)
from .segment import (
    CRC,
    DIR_SIZE,
    DTYPE_CODES,
    FIXED_SIZE,
    FORMAT_VERSION,
    MAGIC,
    TIME_COLUMN_ID,
)

_ZSTD_MIN = 64  # encode_column tries zstd only from this many payload bytes
_U64 = np.uint64


def supported(schema: Any) -> bool:
    return all(c.is_string or c.dtype.kind in "iufb" for c in schema.columns)


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
        # user → zstd of its stored payload, made by the shuffle probe (whole-column probes)
        self.zipped: dict[int, bytes] = {}

    def choose_shuffle(self, stored: np.ndarray, plain_all: bytes | None = None) -> None:
        """Mirror encode_column's `shuffle_or_not`: for users with >= 64 stored values of
        width >= 2, keep the payload unshuffled when that compresses smaller. Every probe of
        the column is compressed in one call (`_compress_many`: threads when there are many),
        and a probe that is the user's whole payload keeps its zstd bytes for the output.
        `plain_all`: every user's unshuffled payload at the same offsets (`_plain_bytes`), so
        a user's unshuffled probe is a slice, not a transpose of its planes."""
        view = memoryview(self.payload)
        plain_view = memoryview(plain_all) if plain_all is not None else None
        users = np.flatnonzero((stored >= 64) & (self.width >= 2)).tolist()
        if not users:
            return
        widths, counts, offsets = (self.width.tolist(), np.asarray(stored).tolist(),
                                   self.offsets.tolist())
        probes: list[bytes] = []
        plains: dict[int, np.ndarray] = {}  # users past the probe: their unshuffled values
        for i, u in enumerate(users):
            w, m, off = widths[u], counts[u], offsets[u]
            if m <= SHUFFLE_PROBE and plain_view is not None:
                probes.append(bytes(view[off:off + w * m]))
                probes.append(bytes(plain_view[off:off + w * m]))
                continue
            planes = np.frombuffer(view[off:off + w * m], dtype=np.uint8).reshape(w, m)
            narrowed = np.ascontiguousarray(planes.T).reshape(-1).view(WIDTH_DTYPES[w])
            if m <= SHUFFLE_PROBE:
                probes.append(bytes(view[off:off + w * m]))
                probes.append(narrowed.tobytes())
            else:
                plains[i] = narrowed
                probe = narrowed[:SHUFFLE_PROBE]
                probes.append(shuffle_bytes(probe, w))
                probes.append(probe.tobytes())
        zipped = _compress_many(compressor(self.level), probes)
        for i, u in enumerate(users):
            s_zip, p_zip = zipped[2 * i], zipped[2 * i + 1]
            whole = counts[u] <= SHUFFLE_PROBE
            if len(s_zip) <= len(p_zip):
                if whole:
                    self.zipped[u] = s_zip
            else:
                self.plain[u] = probes[2 * i + 1] if whole else plains[i].tobytes()
                if whole:
                    self.zipped[u] = p_zip

    def data(self, u: int) -> bytes | memoryview:
        plain = self.plain.get(u)
        if plain is not None:
            return plain
        off = int(self.offsets[u])
        return memoryview(self.payload)[off:off + int(self.lengths[u])]


# The append kernel's `scatter` (seqvault/native_append.c): the loop below in one C pass
# (~14 ms a column of a 262k-event flush in numpy). None: numpy (tests switch it here).
KERNEL: ModuleType | None = native.load_kernel()


def _scatter(col: _Column, values_u64: np.ndarray, user_of: np.ndarray, rank: np.ndarray,
             m: np.ndarray, plain: bool = False) -> bytes | None:
    """Write each value's low `width` bytes into its user's payload, byte-plane shuffled:
    byte p of value i of user u lands at offsets[u] + p * m[u] + i. With `plain`, also return
    every user's unshuffled payload at the same offsets (values one after another, low
    `width` bytes each, little-endian): the shuffle probe's other side."""
    total = int(col.lengths.sum())
    if KERNEL is not None:
        got = KERNEL.scatter(values_u64, user_of, rank, col.offsets, m, col.width, total, plain)
        if plain:
            col.payload = got[0].tobytes()
            return bytes(got[1].tobytes())
        col.payload = got.tobytes()
        return None
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
    if not plain:
        return None
    # Rows are in user order, so the unshuffled payloads are the rows' low bytes in order.
    return le[np.arange(8) < w_ev[:, None]].tobytes()


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
    col.choose_shuffle(counts, _scatter(col, off, user_of, rank, counts, plain=True))


def _float_column(col: _Column, values: np.ndarray, counts: np.ndarray, user_of: np.ndarray,
                  rank: np.ndarray) -> None:
    """RAW, always byte-plane shuffled (encode_column's float case)."""
    w = values.dtype.itemsize
    bits = values.astype(values.dtype.newbyteorder("<"), copy=False).view(WIDTH_DTYPES[w])
    col.width = np.full(counts.size, w, dtype=np.int64)
    col.enc = np.full(counts.size, ENC_RAW, dtype=np.int64)
    col.param = np.zeros(counts.size, dtype=np.uint64)
    col.lengths = col.width * counts
    col.offsets = np.concatenate(([0], np.cumsum(col.lengths)[:-1])).astype(np.int64)
    _scatter(col, bits.astype(_U64), user_of, rank, counts)


def _bool_column(col: _Column, values: np.ndarray, counts: np.ndarray, user_of: np.ndarray,
                 rank: np.ndarray) -> None:
    """BITPACK: each user's values through np.packbits (most significant bit first)."""
    col.width = np.ones(counts.size, dtype=np.int64)
    col.enc = np.full(counts.size, ENC_BITPACK, dtype=np.int64)
    col.param = np.zeros(counts.size, dtype=np.uint64)
    col.lengths = (counts + 7) // 8
    col.offsets = np.concatenate(([0], np.cumsum(col.lengths)[:-1])).astype(np.int64)
    byte = col.offsets[user_of] + rank // 8
    bit = (values.astype(np.int64) << (7 - rank % 8))
    packed = np.bincount(byte, weights=bit, minlength=int(col.lengths.sum()))
    col.payload = packed.astype(np.uint8).tobytes()


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
    plain = _scatter(sub, zz[idx], user_of[idx], rank[idx] - 1, m, plain=True)
    col.payload = sub.payload
    col.choose_shuffle(m, plain)


@dataclass
class Encoded:
    """Many segments in one buffer: segment i is buf[offsets[i] : offsets[i] + lengths[i]],
    with counts[i] events from mins[i] to maxs[i]."""

    buf: np.ndarray  # uint8
    offsets: np.ndarray
    lengths: np.ndarray
    counts: np.ndarray
    mins: np.ndarray
    maxs: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.size)

    def blob(self, i: int) -> bytes:
        off = int(self.offsets[i])
        return self.buf[off:off + int(self.lengths[i])].tobytes()


def encode_users(keys: list[Any], key_type: int, kbytes: list[bytes], schema_version: int,
                 ts: np.ndarray, cols: list[tuple[int, str, np.ndarray, int]],
                 starts: np.ndarray, counts: np.ndarray) -> Iterator[tuple[Any, bytes, int, int,
                                                                           int]]:
    """Segments of many users whose events are contiguous and time-sorted in `ts` / `cols`
    (user u owns rows starts[u] : starts[u] + counts[u]; every count >= 1).

    `cols` holds (col_id, type name, values, zstd level). Yields (key, segment bytes, count,
    min_ts, max_ts) per user, in order (`encode_many` gives them as one buffer).
    """
    enc = encode_many(key_type, kbytes, schema_version, ts, cols, starts, counts)
    cnt, mins, maxs = enc.counts.tolist(), enc.mins.tolist(), enc.maxs.tolist()
    for u, key in enumerate(keys):
        yield key, enc.blob(u), cnt[u], mins[u], maxs[u]


def encode_many(key_type: int, kbytes: list[bytes] | np.ndarray, schema_version: int,
                ts: np.ndarray, cols: list[tuple[int, str, np.ndarray, int]],
                starts: np.ndarray, counts: np.ndarray) -> Encoded:
    """`encode_users` without a Python object per user: headers are built as numpy records,
    checksums by `crc_many`, and the segments laid out in one buffer. `kbytes`: each user's
    canonical key bytes, or (int64 keys) the keys as an int64 array."""
    n_users = int(np.asarray(counts).size)
    if n_users == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Encoded(np.zeros(0, dtype=np.uint8), empty, empty, empty, empty, empty)
    starts = np.asarray(starts).astype(np.int64)
    counts = np.asarray(counts).astype(np.int64)
    ends = starts + counts
    user_of = np.repeat(np.arange(n_users), counts)
    rank = np.arange(ts.size, dtype=np.int64) - starts[user_of]
    columns: list[_Column] = []
    tcol = _Column(TIME_COLUMN_ID, DTYPE_CODES["int64"], DEFAULT_LEVEL)  # as encode_segment
    _time_column(tcol, ts.astype(np.int64, copy=False), starts, ends, counts, user_of, rank)
    columns.append(tcol)
    for col_id, type_name, values, level in cols:
        c = _Column(col_id, DTYPE_CODES[type_name], level)
        kind = values.dtype.kind
        if kind == "f":
            _float_column(c, values, counts, user_of, rank)
        elif kind == "b":
            _bool_column(c, values, counts, user_of, rank)
        else:
            _int_column(c, values, starts, counts, user_of, rank)
        columns.append(c)
    zipped = _compress_all(columns)
    stored = [_stored(c, z, n_users) for c, z in zip(columns, zipped)]
    mins, maxs = ts[starts].astype(np.int64), ts[ends - 1].astype(np.int64)
    heads = _headers(key_type, kbytes, schema_version, columns, stored, counts, mins, maxs)
    buf, offsets, lengths = _lay_out(heads, stored, n_users)
    return Encoded(buf, offsets, lengths, counts, mins, maxs)


class _Stored:
    """One column's stored bytes of every user (compressed, unshuffled or as encoded), in user
    order: user u's are flat[offsets[u] : offsets[u] + lengths[u]]."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 flags: np.ndarray, crc: np.ndarray) -> None:
        self.flat, self.offsets, self.lengths, self.flags, self.crc = (flat, offsets, lengths,
                                                                        flags, crc)


def _stored(c: _Column, z: dict[int, bytes], n_users: int) -> _Stored:
    """What encode_column stores for each user: zstd bytes where they are smaller, else the
    payload (unshuffled where shuffling did not help); flags and CRC-32 to match."""
    payload = np.frombuffer(c.payload, dtype=np.uint8)
    lengths = c.lengths.astype(np.int64)
    special = sorted(set(z) | set(c.plain))
    if not special:
        flat, offsets = payload, c.offsets.astype(np.int64)
    else:
        # Python only for the users whose bytes differ from the shared payload (>= 64 bytes).
        lengths = lengths.copy()
        pieces: list[bytes | memoryview] = []
        view = memoryview(c.payload)
        prev = 0
        for u in special:
            pieces.append(view[int(c.offsets[prev]):int(c.offsets[u])])
            data = z[u] if u in z else c.plain[u]
            pieces.append(data)
            lengths[u] = len(data)
            prev = u + 1
        if prev < n_users:
            pieces.append(view[int(c.offsets[prev]):])
        flat = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        offsets = _starts_of(lengths)
    is_plain = np.zeros(n_users, dtype=bool)
    is_plain[list(c.plain)] = True
    is_zstd = np.zeros(n_users, dtype=bool)
    is_zstd[list(z)] = True
    flags = np.where((c.width > 1) & ~is_plain & (c.lengths > 0), FLAG_SHUFFLE, 0)
    flags = flags | np.where(is_zstd, FLAG_ZSTD, 0)
    return _Stored(flat, offsets, lengths, flags.astype(np.uint8),
                   crc_ranges(flat, offsets, lengths))


def _starts_of(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(lengths.size, dtype=np.int64)
    np.cumsum(lengths[:-1], out=out[1:])
    return out


def _dir_dtype() -> np.dtype[Any]:
    # DIR_ENTRY "<HBBBBHIIIQI" as a record (docs/format/segment.md, "Column directory").
    dt = np.dtype([("col_id", "<u2"), ("enc", "u1"), ("flags", "u1"), ("width", "u1"),
                   ("dcode", "u1"), ("r1", "<u2"), ("raw_len", "<u4"), ("stored_len", "<u4"),
                   ("crc", "<u4"), ("param", "<u8"), ("r2", "<u4")])
    assert dt.itemsize == DIR_SIZE
    return dt


_DIR_DT = _dir_dtype()


def header_dtype(key_len: int, ncols: int) -> np.dtype[Any]:
    # FIXED_HEADER "<4sHHIIBBHqq", the key, the column directory and the header CRC.
    dt = np.dtype([("magic", "S4"), ("version", "<u2"), ("ncols", "<u2"), ("schema", "<u4"),
                   ("count", "<u4"), ("key_type", "u1"), ("flags", "u1"), ("key_len", "<u2"),
                   ("min_ts", "<i8"), ("max_ts", "<i8"), ("key", "u1", (key_len,)),
                   ("dir", _DIR_DT, (ncols,)), ("crc", "<u4")])
    assert dt.itemsize == FIXED_SIZE + key_len + ncols * DIR_SIZE + CRC.size
    return dt


_HEADER_BLOCK = 2_048  # users whose headers _headers fills at once


def _headers(key_type: int, kbytes: list[bytes] | np.ndarray, schema_version: int,
             columns: list[_Column], stored: list[_Stored], counts: np.ndarray,
             mins: np.ndarray, maxs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every user's header as numpy records, grouped by key length: [(users, records)]."""
    n_users = counts.size
    if isinstance(kbytes, np.ndarray):  # int64 keys: 8 little-endian bytes each
        groups = [(np.arange(n_users), kbytes.astype("<i8").view(np.uint8).reshape(-1, 8))]
    else:
        klens = np.fromiter((len(k) for k in kbytes), dtype=np.int64, count=n_users)
        groups = []
        for klen in np.unique(klens).tolist():
            users = np.flatnonzero(klens == klen)
            raw = b"".join(kbytes[u] for u in users.tolist())
            groups.append((users, np.frombuffer(raw, dtype=np.uint8).reshape(users.size, klen)))
    ncols = len(columns)
    out = []
    for users, keys in groups:
        h = np.zeros(users.size, dtype=header_dtype(keys.shape[1], ncols))
        # Filled a block of users at a time: a header is hundreds of bytes, so one field of
        # every user's header is one cache line each, and ~70 such strided passes over a
        # 150,000-user flush's headers cost 0.2 s; within a block the headers stay in cache
        # (5x less, measured).
        for lo in range(0, users.size, _HEADER_BLOCK):
            u = users[lo:lo + _HEADER_BLOCK]
            b = h[lo:lo + _HEADER_BLOCK]
            b["magic"] = MAGIC
            b["version"] = FORMAT_VERSION
            b["ncols"] = ncols
            b["schema"] = schema_version
            b["count"] = counts[u]
            b["key_type"] = key_type
            b["key_len"] = keys.shape[1]
            b["min_ts"] = mins[u]
            b["max_ts"] = maxs[u]
            b["key"] = keys[lo:lo + _HEADER_BLOCK]
            d = b["dir"]
            for j, (c, st) in enumerate(zip(columns, stored)):
                d["col_id"][:, j] = c.col_id
                d["enc"][:, j] = c.enc[u]
                d["flags"][:, j] = st.flags[u]
                d["width"][:, j] = c.width[u]
                d["dcode"][:, j] = c.dcode
                d["raw_len"][:, j] = c.lengths[u]
                d["stored_len"][:, j] = st.lengths[u]
                d["crc"][:, j] = st.crc[u]
                d["param"][:, j] = c.param[u]
        rows = h.view(np.uint8).reshape(users.size, h.dtype.itemsize)
        h["crc"] = crc_rows(rows[:, :-CRC.size])
        out.append((users, rows))
    return out


def _lay_out(heads: list[tuple[np.ndarray, np.ndarray]], stored: list[_Stored], n_users: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's header then its columns' stored bytes, users one after another."""
    hlen = np.zeros(n_users, dtype=np.int64)
    for users, rows in heads:
        hlen[users] = rows.shape[1]
    lengths = hlen + np.sum([s.lengths for s in stored], axis=0)
    offsets = _starts_of(lengths)
    total = int(lengths.sum())
    out = np.empty(total, dtype=np.uint8)
    if crc_many.KERNEL is not None:
        # Every header and column slice to its place with the compiled copy: the numpy path
        # below builds a mask and an int64 index per output byte (~0.2 s a 150,000-user flush).
        for users, rows in heads:
            width = rows.shape[1]
            copy_ranges(rows, np.arange(users.size, dtype=np.int64) * width,
                        np.full(users.size, width, dtype=np.int64), out, offsets[users])
        col_off = offsets + hlen
        for s in stored:
            copy_ranges(s.flat, s.offsets, s.lengths, out, col_off)
            col_off = col_off + s.lengths
        return out, offsets, lengths
    # Header bytes vs payload bytes of the output, in order: masked assignment fills a mask's
    # positions in order, so no index array per byte is needed.
    is_head = np.repeat(np.tile(np.array([True, False]), n_users),
                        np.stack([hlen, lengths - hlen], axis=1).ravel())
    if len(heads) == 1:
        out[is_head] = heads[0][1].ravel()
    else:
        group = np.empty(n_users, dtype=np.int64)
        for g, (users, _rows) in enumerate(heads):
            group[users] = g
        label = np.repeat(group, hlen)
        head_bytes = np.empty(int(hlen.sum()), dtype=np.uint8)
        for g, (_users, rows) in enumerate(heads):
            head_bytes[label == g] = rows.ravel()
        out[is_head] = head_bytes
    # Payload bytes: each column's stored bytes to their places by index (a few tens of bytes
    # per user, where the header is hundreds).
    col_off = offsets + hlen
    for s in stored:
        n = int(s.lengths.sum())
        if n:
            rel = np.arange(n, dtype=np.int64) - np.repeat(_starts_of(s.lengths), s.lengths)
            out[np.repeat(col_off, s.lengths) + rel] = s.flat[np.repeat(s.offsets, s.lengths)
                                                              + rel]
        col_off = col_off + s.lengths
    return out, offsets, lengths


def _compress_all(columns: list[_Column]) -> list[dict[int, bytes]]:
    """zstd every payload of >= 64 bytes (as encode_column does), in one multi-threaded call
    per level; keep a result only when it is smaller. Returns, per column, user → bytes."""
    jobs: list[tuple[int, int, memoryview]] = []
    out: list[dict[int, bytes]] = [{} for _ in columns]
    for ci, c in enumerate(columns):
        lens = c.lengths
        done = c.zipped  # compressed already by the shuffle probe (choose_shuffle)
        for u in np.flatnonzero(lens >= _ZSTD_MIN).tolist():
            z = done.get(u)
            if z is None:
                jobs.append((ci, u, memoryview(c.data(u))))
            elif len(z) < int(lens[u]):
                out[ci][u] = z
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
