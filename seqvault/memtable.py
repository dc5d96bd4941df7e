"""Recent events held in memory until they are sealed into segments, and string dictionaries.

Every event in the memtable is also in the write-ahead log; the memtable is what makes those
events readable at once. Chunks are kept in arrival order (unsorted): reads sort, flush sorts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import ValidationError
from .schema import MAX_STRING_CARDINALITY


class UserTail:
    """One user's unsealed events, as column chunks in arrival order."""

    __slots__ = ("ts", "cols", "count")

    def __init__(self) -> None:
        self.ts: list[np.ndarray] = []
        self.cols: dict[str, list[np.ndarray]] = {}
        self.count = 0

    def add(self, ts: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        self.ts.append(ts)
        for name, arr in cols.items():
            self.cols.setdefault(name, []).append(arr)
        self.count += int(ts.size)

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Concatenated columns in arrival order. Compacts the chunks so repeated reads of a
        user with many small appends stay cheap; arrays are never mutated after, so callers may
        keep the references outside the store lock."""
        if len(self.ts) > 1:
            self.ts = [np.concatenate(self.ts)]
            self.cols = {k: [np.concatenate(v)] for k, v in self.cols.items()}
        return self.ts[0], {k: v[0] for k, v in self.cols.items()}


class MemTable:
    def __init__(self) -> None:
        self.users: dict[Any, UserTail] = {}
        self.events = 0
        self.max_tail = 0

    def add(self, key: Any, ts: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        tail = self.users.get(key)
        if tail is None:
            tail = self.users[key] = UserTail()
        tail.add(ts, cols)
        self.events += int(ts.size)
        self.max_tail = max(self.max_tail, tail.count)

    def get(self, key: Any) -> UserTail | None:
        return self.users.get(key)

    def clear(self) -> None:
        self.users.clear()
        self.events = 0
        self.max_tail = 0

    def __len__(self) -> int:
        return len(self.users)


class StringDict:
    """Dictionary of one string column: code ↔ string, append-only.

    Codes are assigned in log order, so replaying the write-ahead log from the last flush
    reassigns exactly the codes the writer assigned (readers replay too, and agree).
    """

    def __init__(self, name: str, values: Iterable[str] = ()) -> None:
        self.name = name
        self.values: list[str] = list(values)
        self.codes: dict[str, int] = {v: i for i, v in enumerate(self.values)}
        self.persisted = len(self.values)
        self._lookup: np.ndarray | None = None

    def check_room(self, strings: np.ndarray) -> None:
        """Raise if adding `strings` would pass the cardinality limit (checked before the log
        write, so a refused call leaves nothing behind)."""
        if len(self.values) + strings.size <= MAX_STRING_CARDINALITY:
            return  # cannot pass the limit even if every string were new
        new = {s for s in strings.tolist() if s not in self.codes}
        if len(self.values) + len(new) > MAX_STRING_CARDINALITY:
            raise ValidationError(
                f"column {self.name!r}: {len(self.values) + len(new)} distinct strings would pass "
                f"the limit of {MAX_STRING_CARDINALITY} for dictionary-encoded columns "
                f"(use an integer id column for high-cardinality values)", column=self.name)

    def encode(self, strings: np.ndarray) -> np.ndarray:
        if strings.size == 0:
            return np.zeros(0, dtype=np.uint32)
        codes = self.codes
        if strings.size <= 4096:
            # A dict lookup per value beats np.unique's object sort for small calls.
            out = np.empty(strings.size, dtype=np.uint32)
            for i, s in enumerate(strings.tolist()):
                code = codes.get(s)
                if code is None:
                    code = self._add(s)
                out[i] = code
            return out
        uniq, inverse = np.unique(strings, return_inverse=True)
        mapped = np.empty(uniq.size, dtype=np.uint32)
        for i, s in enumerate(uniq.tolist()):
            code = codes.get(s)
            mapped[i] = self._add(s) if code is None else code
        return mapped[inverse.reshape(-1)]

    def _add(self, s: str) -> int:
        code = self.codes[s] = len(self.values)
        self.values.append(s)
        self._lookup = None
        return code

    def code_of(self, s: str) -> int | None:
        return self.codes.get(s)

    def decode(self, codes: np.ndarray, missing: str | None = None) -> np.ndarray:
        """Codes → numpy unicode array. Code 0xFFFFFFFF (a column absent from an old segment)
        becomes `missing`."""
        if self._lookup is None or self._lookup.size != len(self.values):
            self._lookup = np.array(self.values, dtype=np.str_) if self.values else np.array(
                [], dtype=np.str_)
        if missing is not None and codes.size:
            absent = codes == 0xFFFF_FFFF
            if absent.any():
                base = self.decode(np.where(absent, 0, codes)) if self.values else np.array(
                    [""] * codes.size, dtype=np.str_)
                width = max(base.dtype.itemsize // 4, len(missing), 1)
                out = base.astype(f"<U{width}")
                out[absent] = missing
                return out
        if codes.size and int(codes.max()) >= self._lookup.size:
            from .errors import CorruptionError

            raise CorruptionError(f"column {self.name!r}: dictionary code {int(codes.max())} is "
                                  f"unknown ({self._lookup.size} strings)")
        return self._lookup[codes]

    def pending(self) -> list[tuple[int, str]]:
        return [(i, self.values[i]) for i in range(self.persisted, len(self.values))]

    def truncate(self, size: int) -> None:
        """Forget codes past `size` (used by readers re-replaying a new log)."""
        for s in self.values[size:]:
            del self.codes[s]
        del self.values[size:]
        self._lookup = None
