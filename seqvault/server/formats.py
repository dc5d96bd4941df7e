"""Wire formats: content negotiation, response encoders, request-body decoders, compression.

Pure transforms (no I/O, no store access) so they can be tested alone and run in a worker
thread. Encoders are vectorised: numeric columns go numpy → list (`tolist`, one C call per
column) for JSON and MessagePack, and numpy → Arrow without copying; no per-event Python loop.

Formats (docs/design/http.md has the full contract):

- ``application/json`` — columnar: ``{"user_id", "count", "columns": {name: [...]}}``.
- ``application/vnd.msgpack`` (also ``application/msgpack`` and ``application/x-msgpack``) —
  the same map, MessagePack.
- ``application/vnd.apache.arrow.stream`` — an Arrow IPC stream with one record batch whose
  columns are the requested columns (string columns as ``dictionary<int32, string>``, the
  store's own encoding); user id, count and time unit in the schema metadata.
"""

from __future__ import annotations

import ctypes
import gzip
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
import zstandard

from ..schema import Schema
from .problems import Problem

JSON = "application/json"
MSGPACK = "application/vnd.msgpack"
MSGPACK_ALT = "application/x-msgpack"
MSGPACK_STD = "application/msgpack"  # the IANA-registered name (2024); clients send all three
ARROW = "application/vnd.apache.arrow.stream"
MEDIA_TYPES = {"json": JSON, "msgpack": MSGPACK, "arrow": ARROW}
_BY_MEDIA = {JSON: "json", MSGPACK: "msgpack", MSGPACK_ALT: "msgpack", MSGPACK_STD: "msgpack",
             ARROW: "arrow"}
OFFERED = (JSON, MSGPACK, ARROW)

ZSTD_LEVEL = 1  # fast: on a LAN the wire is rarely slower than level-1 zstd (~500 MB/s)
GZIP_LEVEL = 4


# ============================================================ negotiation
def _parse_header_list(value: str) -> list[tuple[str, float, int]]:
    """`a/b;q=0.5, c/d` → [(token, q, position)], tokens lower-cased, q clamped to 0..1."""
    out = []
    for pos, part in enumerate(value.split(",")):
        items = [p.strip() for p in part.split(";")]
        token = items[0].lower()
        if not token:
            continue
        q = 1.0
        for param in items[1:]:
            name, _, val = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(val.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        out.append((token, q, pos))
    return out


def negotiate(accept: str | None) -> str:
    """The response format for an Accept header: "json", "msgpack" or "arrow".

    No header (or */*) → JSON. Exact media types beat `application/*` beat `*/*`; among equals
    the higher q wins, then the client's order. Nothing acceptable → 406.
    """
    if not accept or not accept.strip():
        return "json"
    best: tuple[float, int, int, str] | None = None  # (q, specificity, -position, format)
    for token, q, pos in _parse_header_list(accept):
        if q <= 0:
            continue
        if token in _BY_MEDIA:
            cand = (q, 2, -pos, _BY_MEDIA[token])
        elif token in ("*/*", "application/*"):
            cand = (q, 1 if token == "application/*" else 0, -pos, "json")
        else:
            continue
        if best is None or cand[:3] > best[:3]:
            best = cand
    if best is None:
        raise Problem(406, "not-acceptable",
                      f"Accept: {accept!r} matches none of the offered media types "
                      f"{list(OFFERED)} (MessagePack is also served as {MSGPACK_STD} and "
                      f"{MSGPACK_ALT})",
                      available=list(OFFERED))
    return best[3]


def choose_encoding(accept_encoding: str | None) -> str | None:
    """"zstd", "gzip" or None (identity) for an Accept-Encoding header; zstd wins ties."""
    if not accept_encoding:
        return None
    q = {"zstd": 0.0, "gzip": 0.0}
    star = None
    for token, qv, _pos in _parse_header_list(accept_encoding):
        if token in q:
            q[token] = qv
        elif token == "*":
            star = qv
    if star is not None:
        for k in q:
            if not any(t == k for t, _, _ in _parse_header_list(accept_encoding)):
                q[k] = star
    best = max(q, key=lambda k: (q[k], k == "zstd"))
    return best if q[best] > 0 else None


def stream_compressor(encoding: str | None) -> Any:
    """`squeeze(piece) -> bytes` for a streamed body; `squeeze(None)` ends the stream. Memory
    stays at the compressor's window, whatever the body's size."""
    if encoding == "zstd":
        cobj: Any = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    elif encoding == "gzip":
        cobj = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    else:
        return lambda piece: b"" if piece is None else piece

    def squeeze(piece: bytes | None) -> bytes:
        return cobj.flush() if piece is None else cobj.compress(piece)

    return squeeze


def compress(body: bytes, encoding: str | None) -> bytes:
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    return body


# ============================================================ responses
def _json_list(arr: np.ndarray) -> list[Any]:
    """A column as a JSON-safe list: NaN/±inf (not JSON) become null."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            obj = arr.astype(object)
            obj[bad] = None
            return obj.tolist()
    return arr.tolist()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                      check_circular=False).encode("utf-8")


def arrow_type(schema: Schema, name: str) -> pa.DataType:
    if name == schema.time_column:
        return pa.int64()
    col = schema.column(name)
    if col.is_string:
        return pa.string()
    return pa.from_numpy_dtype(col.dtype)


def _arrow_array(arr: np.ndarray, typ: pa.DataType) -> pa.Array:
    if typ == pa.string():
        return arrow_strings(arr)
    return pa.array(arr, type=typ)  # numeric: zero-copy view of the numpy buffer


def arrow_strings(arr: np.ndarray) -> pa.Array:
    """A string column → Arrow `dictionary<int32, string>`, without a per-event Python loop.

    The engine decodes a string column by indexing its dictionary, so a column holds few
    distinct values many times. Arrow's C++ dictionary_encode over each row's fixed-width UTF-32
    bytes (numpy unicode arrays, viewed zero-copy as fixed-size binary) or over each element's
    object pointer (object arrays) recovers the codes in one pass; only the k distinct values
    are touched from Python. Several times faster than `pa.array(arr)`, which converts every
    string; the client also receives the store's own encoding.
    """
    arr = np.ascontiguousarray(arr)
    n = arr.size
    if n == 0 or arr.dtype.kind not in "UO":
        return pa.array(arr.tolist(), type=pa.string()).dictionary_encode()
    if arr.dtype.kind == "O":
        # the array keeps every object alive while their addresses are read
        raw = (ctypes.c_uint8 * (n * arr.itemsize)).from_address(arr.ctypes.data)
        enc = pa.array(np.frombuffer(memoryview(raw), dtype=np.uintp)).dictionary_encode()
        idx = enc.indices.to_numpy()
        first = np.empty(len(enc.dictionary), dtype=np.int64)
        first[idx[::-1]] = np.arange(n - 1, -1, -1)
        values = arr[first]
        if not all(type(v) is str for v in values):
            return pa.array(arr.tolist(), type=pa.string()).dictionary_encode()
        if len(set(values.tolist())) < values.size:  # equal strings in distinct objects
            uniq, remap = np.unique(values.astype(str), return_inverse=True)
            idx = remap.astype(np.int32)[idx]
            values = uniq
    else:
        # each row's UTF-32 bytes as one fixed-size binary value (zero-copy): Arrow hashes them
        size = arr.dtype.itemsize
        if size == 0:
            return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                                  pa.array([""], type=pa.string()))
        rows = pa.FixedSizeBinaryArray.from_buffers(pa.binary(size), n,
                                                    [None, pa.py_buffer(arr)])
        enc = rows.dictionary_encode()
        idx = enc.indices.to_numpy()
        d = enc.dictionary
        values = np.frombuffer(d.buffers()[1], dtype=arr.dtype, count=len(d),
                               offset=d.offset * size)
    return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32, copy=False)),
                                          pa.array(values.tolist(), type=pa.string()))


_IPC_OPTIONS: pa.ipc.IpcWriteOptions | None = None


def _ipc_stream(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=_IPC_OPTIONS) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def user_out(user: Any, ids_as_string: bool) -> Any:
    return str(user) if ids_as_string and user is not None else user


def arrow_from_codes(codes: np.ndarray, lookup: np.ndarray) -> pa.Array:
    """A string column read with ``strings="codes"`` → Arrow `dictionary<int32, string>`
    straight from the store's own codes: no per-event string work at all. A large store
    dictionary is cut down to the codes this response uses."""
    if lookup.size > 4 * max(codes.size, 1024):
        used, codes = np.unique(codes, return_inverse=True)
        lookup = lookup[used]
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32, copy=False)),
                                          pa.array(lookup.tolist(), type=pa.string()))


def encode_sequence(fmt: str, schema: Schema, user: Any, columns: Mapping[str, np.ndarray],
                    count: int, *, ids_as_string: bool = False,
                    dictionaries: Mapping[str, np.ndarray] | None = None) -> bytes:
    """One user's sequence in `fmt`; `columns` in the order they should appear. With
    `dictionaries` (Arrow only), string columns are dictionary codes from the store."""
    uid = user_out(user, ids_as_string)
    if fmt == "json":
        return _dumps({"user_id": uid, "count": count,
                       "columns": {k: _json_list(v) for k, v in columns.items()}})
    if fmt == "msgpack":
        return msgpack.packb({"user_id": uid, "count": count,
                              "columns": {k: v.tolist() for k, v in columns.items()}},
                             use_bin_type=True)
    names = list(columns)
    dicts = dictionaries or {}
    arrays = [arrow_from_codes(columns[n], dicts[n]) if n in dicts
              else _arrow_array(columns[n], arrow_type(schema, n)) for n in names]
    fields = [pa.field(n, a.type, nullable=False) for n, a in zip(names, arrays)]
    meta = {b"seqvault.user_id": str(user).encode(), b"seqvault.count": str(count).encode(),
            b"seqvault.time_column": schema.time_column.encode(),
            b"seqvault.time_unit": schema.time_unit.encode()}
    arrow_schema = pa.schema(fields, metadata=meta)
    return _ipc_stream(pa.RecordBatch.from_arrays(arrays, schema=arrow_schema))


@dataclass
class BatchItem:
    """One user's result in a batch: status 200 with columns, or an error problem."""

    user_id: Any
    status: int
    count: int = 0
    columns: Mapping[str, np.ndarray] | None = None
    problem: dict[str, Any] | None = None


_ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # IPC end-of-stream marker


ARROW_GROUP_EVENTS = 65_536  # users are grouped into record batches of about this many events
ARROW_GROUP_USERS = 1_024  # ... or this many users, whichever comes first


class BatchEncoder:
    """batchGet results, a user at a time, so a response of any size is encoded (and sent) in
    bounded pieces: ``head()``, then ``item()`` per user, then ``tail()``.

    JSON/msgpack: ``{"results": [...]}``; ``item()`` returns that user's encoded entry (the
    caller joins JSON entries with ``,``; the msgpack array header carries the count, given up
    front). Arrow: one IPC stream of record batches, one row per user, with ``user_id``,
    ``status``, ``count``, ``error`` and one list column per requested column. A record batch
    costs ~0.8 ms to build whatever its size, so users are grouped: ``item()`` returns b""
    until ARROW_GROUP_EVENTS events or ARROW_GROUP_USERS users are pending, then one batch.
    """

    def __init__(self, fmt: str, schema: Schema, names: Sequence[str], n_items: int, *,
                 ids_as_string: bool = False) -> None:
        self.fmt = fmt
        self.schema = schema
        self.names = list(names)
        self.n_items = n_items
        self.ids_as_string = ids_as_string
        self._pending: list[BatchItem] = []
        self._pending_events = 0
        if fmt == "arrow":
            str_ids = schema.user_type == "string" or ids_as_string
            self._uid_type = pa.string() if str_ids else pa.int64()
            fields = [pa.field("user_id", self._uid_type),
                      pa.field("status", pa.int16(), nullable=False),
                      pa.field("count", pa.int64(), nullable=False),
                      pa.field("error", pa.string())]
            self._types = [arrow_type(schema, n) for n in self.names]
            fields += [pa.field(n, pa.large_list(pa.field("item", t, nullable=False)))
                       for n, t in zip(self.names, self._types)]
            meta = {b"seqvault.time_column": schema.time_column.encode(),
                    b"seqvault.time_unit": schema.time_unit.encode()}
            self._schema = pa.schema(fields, metadata=meta)

    def head(self) -> bytes:
        if self.fmt == "json":
            return b'{"results":['
        if self.fmt == "msgpack":
            packer = msgpack.Packer(use_bin_type=True)
            return (packer.pack_map_header(1) + packer.pack("results")
                    + packer.pack_array_header(self.n_items))
        return self._schema.serialize().to_pybytes()

    def tail(self) -> bytes:
        if self.fmt == "arrow":
            return self._flush() + _ARROW_EOS
        return b"]}" if self.fmt == "json" else b""

    @staticmethod
    def estimate(it: BatchItem) -> int:
        """An upper bound of the bytes `it` adds to an Arrow body (before it is encoded)."""
        cols = it.columns if it.status == 200 and it.columns is not None else {}
        return 64 + len(str(it.problem or "")) + sum(int(v.nbytes) + 8 * v.size
                                                     for v in cols.values())

    def item(self, it: BatchItem) -> bytes:
        ok = it.status == 200 and it.columns is not None
        if self.fmt == "arrow":
            self._pending.append(it)
            self._pending_events += it.count if ok else 0
            if (self._pending_events >= ARROW_GROUP_EVENTS
                    or len(self._pending) >= ARROW_GROUP_USERS):
                return self._flush()
            return b""
        r: dict[str, Any] = {"user_id": user_out(it.user_id, self.ids_as_string),
                             "status": it.status}
        if ok:
            assert it.columns is not None
            conv = _json_list if self.fmt == "json" else (lambda a: a.tolist())
            r["count"] = it.count
            r["columns"] = {k: conv(v) for k, v in it.columns.items()}
        else:
            r["problem"] = it.problem
        return _dumps(r) if self.fmt == "json" else msgpack.packb(r, use_bin_type=True)

    def _flush(self) -> bytes:
        items, self._pending, self._pending_events = self._pending, [], 0
        if not items:
            return b""
        ok = np.array([it.status == 200 and it.columns is not None for it in items], dtype=bool)
        counts = np.array([it.count if o else 0 for it, o in zip(items, ok)], dtype=np.int64)
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        if self._uid_type == pa.string():
            uids = pa.array([None if it.user_id is None else str(it.user_id) for it in items],
                            type=pa.string())
        else:
            uids = pa.array([it.user_id if isinstance(it.user_id, int)
                             and not isinstance(it.user_id, bool) else None for it in items],
                            type=pa.int64())
        arrays: list[pa.Array] = [
            uids,
            pa.array(np.array([it.status for it in items], dtype=np.int16)),
            pa.array(counts),
            pa.array([None if o else (it.problem or {}).get("detail", "")
                      for it, o in zip(items, ok)], type=pa.string()),
        ]
        mask = pa.array(~ok)
        for n, typ in zip(self.names, self._types):
            parts = [it.columns[n] for it, o in zip(items, ok) if o and it.columns is not None]
            if parts:
                flat = np.concatenate(parts)
            else:
                flat = np.zeros(0, dtype=object if typ == pa.string() else typ.to_pandas_dtype())
            values = _arrow_array(flat, typ)
            if typ == pa.string():  # plain strings inside lists (nested dictionaries are rare)
                values = values.dictionary_decode()
            arrays.append(pa.LargeListArray.from_arrays(pa.array(offsets), values, mask=mask))
        batch = pa.RecordBatch.from_arrays(arrays, schema=self._schema)
        return batch.serialize().to_pybytes()


def encode_batch(fmt: str, schema: Schema, names: Sequence[str], items: Sequence[BatchItem],
                 *, ids_as_string: bool = False) -> bytes:
    """All of a batch's results as one body (the streaming encoder, joined)."""
    enc = BatchEncoder(fmt, schema, names, len(items), ids_as_string=ids_as_string)
    pieces = [enc.item(it) for it in items]
    sep = b"," if fmt == "json" else b""
    return enc.head() + sep.join(pieces) + enc.tail()


# ============================================================ request bodies
def body_format(content_type: str | None) -> str:
    """Request Content-Type → "json" | "msgpack" | "arrow", or 415."""
    media = (content_type or "").split(";")[0].strip().lower()
    if not media:
        media = JSON
    fmt = _BY_MEDIA.get(media)
    if fmt is None:
        raise Problem(415, "unsupported-media-type",
                      f"Content-Type: {content_type!r} is not one of "
                      f"{[JSON, MSGPACK, MSGPACK_STD, MSGPACK_ALT, ARROW]}",
                      accepted=[JSON, MSGPACK, MSGPACK_STD, MSGPACK_ALT, ARROW])
    return fmt


def decode_columns(fmt: str, raw: bytes) -> Mapping[str, Any]:
    """A write body → mapping of column name → values (lists, or Arrow arrays).

    JSON and MessagePack bodies are ``{"columns": {name: [...], ...}}`` (the shape reads
    return); Arrow bodies are an IPC stream whose columns are the event columns.
    """
    if fmt == "arrow":
        try:
            table = pa.ipc.open_stream(pa.py_buffer(raw)).read_all()
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
            raise Problem(400, "malformed-body",
                          f"body: not an Arrow IPC stream ({exc})") from None
        return {name: table.column(name) for name in table.column_names}
    try:
        if fmt == "json":
            doc = json.loads(raw)
        else:
            doc = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise Problem(400, "malformed-body", f"body: not valid {fmt.upper()} ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("columns"), dict):
        raise Problem(422, "validation",
                      'body: expected an object {"columns": {name: [values...], ...}}, got '
                      f"{type(doc).__name__}" + (f" with keys {sorted(doc)[:5]}"
                                                 if isinstance(doc, dict) else ""),
                      column="columns")
    extra = sorted(str(k) for k in doc if k != "columns")
    if extra:
        raise Problem(422, "validation", f"body: unknown member(s) {extra[:5]}; the body is "
                      '{"columns": {...}} only', column=extra[0])
    cols = doc["columns"]
    bad = [k for k, v in cols.items() if not isinstance(v, list)]
    if bad:
        raise Problem(422, "validation",
                      f"body: column {bad[0]!r} must be a list of values, got "
                      f"{type(cols[bad[0]]).__name__}", column=bad[0])
    return cols


def reject_bools(schema: Schema, cols: Mapping[str, Any]) -> None:
    """422 for JSON/msgpack `true`/`false` in a column that is not bool: Python's bool is an
    int, so the engine would store `true` as 1 without a word."""
    for name, values in cols.items():
        if not isinstance(values, list):
            continue
        if name not in (schema.user_column, schema.time_column):
            col = schema.by_name.get(name)
            if col is None or col.type == "bool":  # unknown columns: the engine reports them
                continue
        for row, v in enumerate(values):
            if v is True or v is False:
                raise Problem(422, "validation",
                              f"column {name!r}: row {row}: {v!r} is a boolean; this column "
                              "holds numbers or strings", column=name, row=row, value=v)
