"""LaserReader: from the store to the padded tensors a long-sequence model eats, leakage-free.

    from seqvault.laser_reader import LaserReader
    reader = LaserReader(vault, columns=["item_id", "category"], max_len=1000)
    batch = reader.read_batch([7, 8, 9], before=[t7, t8, t9])  # events strictly before t_b
    batch["item_id"]      # [B, T] chronological, left padded: the newest event is batch[:, -1]
    batch.mask            # [B, T] bool, True = real event (key_padding_mask() is its negation)
    batch.to_torch("cuda", pin_memory=True)

`read_jagged` gives the same rows as flat `values` + `offsets [B+1]` (HSTU-style). The PyTorch
`ImpressionDataset` (training batches with each impression's history as of its own timestamp,
sharded across DataLoader workers and ranks) is importable from here when torch is installed.
Design, mask polarity and measured cost: docs/design/laser_reader.md. Import it from
`seqvault.laser_reader`, which also serves the torch-only dataset lazily.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ValidationError
from ..schema import TIME_UNITS
from .batch import JaggedBatch, LaserBatch, pad_flat, positions_mask
from .features import StringMap, TimeBuckets, to_ms

__all__ = ["JaggedBatch", "LaserBatch", "LaserReader", "StringMap", "TimeBuckets"]

PAD_TO = ("max_len", "longest")


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool | np.bool_) and isinstance(v, int | np.integer)


def check_times(name: str, value: Any, n: int) -> int | np.ndarray | None:
    """None, one integer timestamp, or one integer per user (list / 1-D integer array)."""
    if value is None:
        return None
    if _is_int(value):
        return int(value)
    if isinstance(value, str | bytes | float | bool | np.floating | np.bool_) \
            or not (isinstance(value, Sequence | np.ndarray) or hasattr(value, "__array__")):
        raise ValidationError(f"{name}: {value!r} ({type(value).__name__}) must be an integer "
                              f"timestamp or a sequence of {n} integer timestamps (one per user)",
                              column=name, value=value)
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValidationError(f"{name}: got shape {arr.shape}, expected one timestamp per user, "
                              f"i.e. shape ({n},)", column=name, value=arr.shape)
    if n and arr.dtype.kind not in "iu":
        raise ValidationError(f"{name}: values of dtype {arr.dtype} must be integer timestamps "
                              "(in the store's time unit)", column=name, value=str(arr.dtype))
    if arr.dtype.kind == "u" and n and int(arr.max()) >= 1 << 63:
        raise ValidationError(f"{name}: {int(arr.max())} does not fit int64", column=name,
                              value=int(arr.max()))
    return arr.astype(np.int64)


class LaserReader:
    """Reads batches of users from a `SeqVault` into padded or jagged numpy arrays.

    - `columns`: event columns to return (the time column may be one of them). String columns
      need an entry in `string_maps`: a dict str → int (unknown strings map to `oov_id`, or are
      an error when `oov_id` is None), a `StringMap`, or "store" (the store's own dictionary
      codes + 1, so 0 stays free for padding).
    - `max_len`: the newest `max_len` events per user are kept (T = max_len, or the longest row
      in the batch with `pad_to="longest"`).
    - `padding_side`: "left" (default; newest event in the last position) or "right".
    - `pad_value`: one value, or a dict column → value; must fit each column's dtype.
    - `time_features`: True (default `TimeBuckets()`), a `TimeBuckets`, or False/None for none.
    """

    def __init__(self, vault: Any, columns: Sequence[str], max_len: int = 1000,
                 padding_side: str = "left", pad_value: Any = 0,
                 string_maps: Mapping[str, Any] | None = None,
                 time_features: bool | TimeBuckets | None = True, pad_to: str = "max_len",
                 oov_id: int | None = None) -> None:
        self.vault = vault
        schema = vault.schema
        self.schema = schema
        if isinstance(columns, str):
            columns = [columns]
        columns = list(dict.fromkeys(columns))
        if not columns:
            raise ValidationError("columns: need at least one column", column="columns")
        unknown = [c for c in columns if c not in schema.column_names]
        if unknown:
            raise ValidationError(f"columns: unknown column(s) {unknown}; the schema has "
                                  f"{schema.column_names}", column=unknown[0], value=unknown[0])
        self.columns = columns
        if not _is_int(max_len) or max_len <= 0:
            raise ValidationError(f"max_len: {max_len!r} must be a positive integer",
                                  column="max_len", value=max_len)
        self.max_len = int(max_len)
        if padding_side not in ("left", "right"):
            raise ValidationError(f"padding_side: {padding_side!r} must be 'left' or 'right'",
                                  column="padding_side", value=padding_side)
        self.padding_side = padding_side
        if pad_to not in PAD_TO:
            raise ValidationError(f"pad_to: {pad_to!r} must be one of {PAD_TO}", column="pad_to",
                                  value=pad_to)
        self.pad_to = pad_to
        self.string_maps = self._string_maps(string_maps or {}, oov_id)
        self.dtypes = {c: self._out_dtype(c) for c in columns}
        self.pad_values = self._pad_values(pad_value)
        if time_features is True:
            time_features = TimeBuckets()
        elif time_features is False:
            time_features = None
        if time_features is not None and not isinstance(time_features, TimeBuckets):
            raise ValidationError(f"time_features: {time_features!r} must be True, False or a "
                                  "TimeBuckets", column="time_features", value=time_features)
        self.time_buckets: TimeBuckets | None = time_features
        tcol = schema.time_column
        self._read_columns = list(columns)
        if self.time_buckets is not None and tcol not in columns:
            self._read_columns.append(tcol)

    # ------------------------------------------------------------------ set-up checks
    def _string_maps(self, maps: Mapping[str, Any], oov_id: int | None) -> dict[str, StringMap]:
        out: dict[str, StringMap] = {}
        names = set(self.schema.column_names)
        for col, m in maps.items():
            if col not in names:
                raise ValidationError(f"string_maps: unknown column {col!r}; the schema has "
                                      f"{self.schema.column_names}", column=col, value=col)
            if col == self.schema.time_column or not self.schema.column(col).is_string:
                raise ValidationError(f"string_maps: column {col!r} is not a string column",
                                      column=col, value=col)
            if isinstance(m, StringMap):
                m.column = col
                out[col] = m
            elif isinstance(m, str) and m == "store":
                out[col] = StringMap.from_store(self.vault, col, oov_id)
            elif isinstance(m, Mapping):
                out[col] = StringMap(m, oov_id, column=col)
            else:
                raise ValidationError(f"string_maps[{col!r}]: {type(m).__name__} is not a dict "
                                      "str → int, a StringMap or 'store'", column=col)
        for col in self.columns:
            if col != self.schema.time_column and self.schema.column(col).is_string \
                    and col not in out:
                raise ValidationError(
                    f"column {col!r} is a string column: models need integer ids, so pass "
                    f"string_maps={{{col!r}: {{'value': id, ...}}}} (with oov_id=...) or "
                    f"string_maps={{{col!r}: 'store'}} to use the store's dictionary codes",
                    column=col)
        return out

    def _out_dtype(self, col: str) -> np.dtype[Any]:
        if col == self.schema.time_column or col in self.string_maps:
            return np.dtype(np.int64)
        return self.schema.column(col).dtype

    def _pad_values(self, pad_value: Any) -> dict[str, Any]:
        if isinstance(pad_value, Mapping):
            unknown = [c for c in pad_value if c not in self.columns]
            if unknown:
                raise ValidationError(f"pad_value: column(s) {unknown} are not among the "
                                      f"reader's columns {self.columns}", column=unknown[0])
            pads = {c: pad_value.get(c, 0) for c in self.columns}
        else:
            pads = {c: pad_value for c in self.columns}
        for c, v in pads.items():
            dt = self.dtypes[c]
            try:
                ok = bool(np.array(v).astype(dt) == v) and np.isscalar(v)
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok and not (dt.kind == "f" and isinstance(v, float) and np.isnan(v)):
                raise ValidationError(f"pad_value for column {c!r}: {v!r} does not fit its dtype "
                                      f"{dt}", column=c, value=v)
        return pads

    # ------------------------------------------------------------------ reads
    def _now(self) -> int:
        return int(time.time() * TIME_UNITS[self.schema.time_unit])

    def read_jagged(self, user_ids: Iterable[Any], before: Any = None,
                    request_time: Any = None) -> JaggedBatch:
        """The newest `max_len` events per user (strictly before `before`), flat + offsets.

        `before` and `request_time` are one integer timestamp (store time unit) or one per user.
        Event ages are measured from `request_time`, else from `before`, else from now.
        """
        users = list(user_ids)
        n = len(users)
        bef = check_times("before", before, n)
        req = check_times("request_time", request_time, n)
        if isinstance(bef, np.ndarray):
            seqs = self.vault.read_many(users, last=self.max_len, columns=self._read_columns,
                                        before=[int(b) for b in bef])
        else:
            seqs = self.vault.read_many(users, last=self.max_len, columns=self._read_columns,
                                        before=bef)
        lengths = np.fromiter((s.count for s in seqs), dtype=np.int64, count=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat: dict[str, np.ndarray] = {}
        filled = [s for s in seqs if s.count]  # empty reads carry placeholder dtypes
        for col in self._read_columns:
            if filled:
                arr = np.concatenate([s.columns[col] for s in filled])
            else:
                arr = np.zeros(0, dtype=object if col in self.string_maps else self.dtypes.get(
                    col, np.dtype(np.int64)))
            if col in self.string_maps:
                arr = self.string_maps[col].encode(arr)
            flat[col] = arr
        user_arr = np.array(users, dtype=object if self.schema.user_type == "string"
                            else np.int64) if n else np.zeros(0, dtype=np.int64)
        age_ms = age_bucket = ref = None
        if self.time_buckets is not None:
            ts = flat[self.schema.time_column]
            ref_src = req if req is not None else bef
            ref = np.full(n, self._now() if ref_src is None else 0, dtype=np.int64)
            if ref_src is not None:
                ref[:] = ref_src
            age_ms = to_ms(np.repeat(ref, lengths) - ts, self.schema.time_unit)
            age_bucket = self.time_buckets.bucketize(age_ms)
        values = {c: flat[c] for c in self.columns}
        return JaggedBatch(values=values, offsets=offsets, lengths=lengths, user_id=user_arr,
                           age_ms=age_ms, age_bucket=age_bucket, request_time=ref)

    def read_batch(self, user_ids: Iterable[Any], before: Any = None, request_time: Any = None,
                   pad_to: str | None = None) -> LaserBatch:
        """Padded [B, T] arrays (see `LaserBatch`); `pad_to` overrides the reader's setting."""
        pad_to = self.pad_to if pad_to is None else pad_to
        if pad_to not in PAD_TO:
            raise ValidationError(f"pad_to: {pad_to!r} must be one of {PAD_TO}", column="pad_to",
                                  value=pad_to)
        jag = self.read_jagged(user_ids, before=before, request_time=request_time)
        return self.pad(jag, pad_to)

    def pad(self, jag: JaggedBatch, pad_to: str = "max_len") -> LaserBatch:
        """A jagged batch (rows of at most max_len events) → padded [B, T] arrays."""
        lengths = jag.lengths
        if pad_to == "longest":
            width = max(1, int(lengths.max())) if lengths.size else 1
        else:
            width = self.max_len
        mask = positions_mask(lengths, width, self.padding_side)
        values = {c: pad_flat(jag.values[c], mask, self.pad_values[c]) for c in self.columns}
        age_ms = age_bucket = None
        if jag.age_ms is not None:
            age_ms = pad_flat(jag.age_ms, mask, 0)
            age_bucket = pad_flat(jag.age_bucket, mask, 0)
        return LaserBatch(values=values, lengths=lengths, mask=mask, user_id=jag.user_id,
                          age_ms=age_ms, age_bucket=age_bucket, request_time=jag.request_time,
                          padding_side=self.padding_side)

    def __repr__(self) -> str:
        return (f"LaserReader(columns={self.columns}, max_len={self.max_len}, "
                f"padding_side={self.padding_side!r}, pad_to={self.pad_to!r})")
