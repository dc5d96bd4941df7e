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
        """Object array of str → int64 ids. `map(dict.get, ...)` runs in C, no Python loop body."""
        mapping = self._live_mapping()
        if strings.size == 0:
            return np.zeros(0, dtype=np.int64)
        if self.oov is not None:
            return np.fromiter(map(mapping.get, strings, itertools.repeat(self.oov)),
                               dtype=np.int64, count=strings.size)
        sentinel = object()
        got = list(map(mapping.get, strings, itertools.repeat(sentinel)))
        try:
            return np.array(got, dtype=np.int64)
        except TypeError:
            bad = next(s for s, g in zip(strings, got) if g is sentinel)
            raise ValidationError(
                f"column {self.column!r}: string {bad!r} is not in the string map and no OOV id "
                f"was given (pass string_maps={{{self.column!r}: StringMap(mapping, oov=ID)}} "
                "or add it to the mapping)", column=self.column, value=bad) from None

    def __repr__(self) -> str:
        src = "store" if self._vault is not None else f"{len(self.mapping)} strings"
        return f"StringMap({self.column!r}, {src}, oov={self.oov!r})"
