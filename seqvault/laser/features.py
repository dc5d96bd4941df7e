"""Per-event features for the model: event age (raw ms and log-spaced buckets) and string → id
mapping. Pure numpy, no store access except `StringMap.from_store`'s live dictionary lookup.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ValidationError

# How many store time units make one millisecond (as a multiplier or a divisor).
_TO_MS: dict[str, tuple[int, int]] = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000),
                                      "ns": (1, 1_000_000)}


def to_ms(values: np.ndarray, unit: str) -> np.ndarray:
    """Durations in the store's time unit → int64 milliseconds (floor division below ms)."""
    mul, div = _TO_MS[unit]
    out = values.astype(np.int64, copy=False)
    if mul != 1:
        out = out * mul
    if div != 1:
        out = np.floor_divide(out, div)
    return out


@dataclass(frozen=True)
class TimeBuckets:
    """Log-spaced buckets of event age in milliseconds.

    Bucket 0 is reserved for padding. Bucket 1 holds ages below `min_ms` (including negative
    ages: an event newer than an explicit `request_time`). Buckets 2 .. n_buckets-2 are
    log-spaced between `min_ms` and `max_ms`; bucket n_buckets-1 holds everything at or above
    `max_ms`. An embedding table for them needs `n_buckets` rows.
    """

    n_buckets: int = 64
    min_ms: float = 1_000.0  # one second
    max_ms: float = 2 * 365 * 86_400_000.0  # two years

    def __post_init__(self) -> None:
        if isinstance(self.n_buckets, bool) or not isinstance(self.n_buckets, int) \
                or self.n_buckets < 4:
            raise ValidationError(f"time_features.n_buckets: {self.n_buckets!r} must be an "
                                  "integer >= 4", column="n_buckets", value=self.n_buckets)
        if not 0 < self.min_ms < self.max_ms:
            raise ValidationError(f"time_features: need 0 < min_ms < max_ms, got min_ms="
                                  f"{self.min_ms!r}, max_ms={self.max_ms!r}", column="min_ms",
                                  value=self.min_ms)

    @property
    def edges(self) -> np.ndarray:
        """The n_buckets-2 bucket boundaries in ms (bucket i+2 starts at edges[i])."""
        return np.geomspace(self.min_ms, self.max_ms, self.n_buckets - 2)

    def bucketize(self, age_ms: np.ndarray) -> np.ndarray:
        """Bucket ids (int64, 1 .. n_buckets-1) of ages in ms; callers zero the padding."""
        return np.searchsorted(self.edges, age_ms, side="right").astype(np.int64) + 1


_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


def _fnv1a(strings: np.ndarray) -> np.ndarray:
    """A 64-bit FNV-1a-style hash of each string of a numpy unicode array, taken over its raw
    bytes 8 at a time (then 4): one vectorised pass per 8 bytes of width, none per string.
    Trailing NULs are hashed too: compare only arrays of the same width."""
    strings = np.ascontiguousarray(strings)
    n, size = strings.shape[0], strings.dtype.itemsize
    out = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if n == 0:
        return out
    words = size // 8
    # Strided views straight into the buffer (unaligned reads are fine for numpy).
    wide = np.ndarray((n, words), dtype=np.uint64, buffer=strings.data, strides=(size, 8))
    for j in range(words):
        out ^= wide[:, j]
        out *= _FNV_PRIME
    if size % 8:
        tail = np.ndarray((n,), dtype=np.uint32, buffer=strings.data, offset=words * 8,
                          strides=(size,))
        out ^= tail
        out *= _FNV_PRIME
    return out


class StringMap:
    """Maps a string column to integer ids: a dict (str → int) with an optional OOV id.

    With `oov=None` an unknown string is an error naming the column and the value.
    `StringMap.from_store(vault, column)` uses the store's own dictionary codes + 1 (0 stays free
    for padding), looked up live so strings added after construction map too.
    """

    def __init__(self, mapping: Mapping[str, int], oov: int | None = None, *,
                 column: str = "?", vault: Any = None) -> None:
        self.mapping = mapping
        self.oov = oov
        self.column = column
        self._vault = vault
        self._table: tuple[Any, np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_store(cls, vault: Any, column: str, oov: int | None = None) -> StringMap:
        return cls({}, oov, column=column, vault=vault)

    def _live_mapping(self) -> Mapping[str, int]:
        if self._vault is None:
            return self.mapping
        sd = self._vault.dicts.get(self.column)
        codes = {} if sd is None else sd.codes
        # Cache the +1 view; rebuild only when the dictionary grew.
        if len(self.mapping) != len(codes):
            self.mapping = {s: c + 1 for s, c in codes.items()}
        return self.mapping

    def encode(self, strings: np.ndarray) -> np.ndarray:
        """Array of strings → int64 ids, vectorised.

        The store returns numpy unicode arrays: those are hashed column-wise (FNV-1a over the
        code points, one numpy pass per character position, not per event), looked up by
        `searchsorted` in the sorted key hashes and confirmed by a string comparison, so a hash
        collision can never map a string to the wrong id. Object arrays of str use
        `map(dict.get, ...)`, which runs in C.
        """
        mapping = self._live_mapping()
        if strings.size == 0:
            return np.zeros(0, dtype=np.int64)
        if strings.dtype.kind == "U":
            ids, found = self._encode_unicode(mapping, strings)
        else:
            sentinel = -(1 << 63)
            ids = np.fromiter(map(mapping.get, strings, itertools.repeat(sentinel)),
                              dtype=np.int64, count=strings.size)
            found = ids != sentinel
        if self.oov is not None:
            return np.where(found, ids, self.oov)
        if not found.all():
            bad = strings[int(np.argmin(found))]
            raise ValidationError(
                f"column {self.column!r}: string {str(bad)!r} is not in the string map and no "
                f"OOV id was given (pass string_maps={{{self.column!r}: StringMap(mapping, "
                "oov=ID)}} or oov_id=..., or add it to the mapping)", column=self.column,
                value=str(bad))
        return ids

    def _encode_unicode(self, mapping: Mapping[str, int], strings: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        width = strings.dtype.itemsize // 4
        key = (id(mapping), len(mapping), width)
        if self._table is None or self._table[0] != key:
            # Longer keys cannot match; numpy unicode drops trailing NULs, so keys ending in
            # one cannot occur in such an array (and would alias their stripped form).
            keys = [k for k in mapping if len(k) <= width and not k.endswith("\x00")]
            ku = np.array(keys, dtype=strings.dtype) if keys else np.zeros(0, strings.dtype)
            kv = np.array([mapping[k] for k in keys], dtype=np.int64)
            kh = _fnv1a(ku)
            order = np.argsort(kh, kind="stable")
            self._table = (key, kh[order], ku[order], kv[order])
        _, kh, ku, kv = self._table
        if kh.size == 0:
            return np.zeros(strings.size, np.int64), np.zeros(strings.size, bool)
        h = _fnv1a(strings)
        pos = np.searchsorted(kh, h)
        np.minimum(pos, kh.size - 1, out=pos)
        found = kh[pos] == h
        found &= ku[pos] == strings
        # Two keys with equal hashes: the confirm step rejects one of them; resolve those
        # (practically never) strings with an exact dict lookup.
        if not found.all() and np.unique(kh).size != kh.size:
            miss = np.flatnonzero(~found)
            sentinel = -(1 << 63)
            extra = np.array([mapping.get(str(x), sentinel) for x in strings[miss]],
                             dtype=np.int64)
            ids = kv[pos]
            ids[miss] = extra
            found[miss] = extra != sentinel
            return ids, found
        return kv[pos], found

    def __repr__(self) -> str:
        src = "store" if self._vault is not None else f"{len(self.mapping)} strings"
        return f"StringMap({self.column!r}, {src}, oov={self.oov!r})"
