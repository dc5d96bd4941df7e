"""The writer's memory of slot owners: slot hash → the key last claimed there by this process.

The index holds hashes only, so learning whose extents sit in a slot means reading the newest
segment's header (`Manifest.owner_of`). One writer runs and every publish claims its slots
first (`Manifest.claim`, `sealing.claim_many`), so a slot remembered here is free or that
key's, and a repeated seal of the user skips the header read (docs/format/index.md, "Slot
hashes").

Two stores behind one lookup: a dict for keys claimed one at a time (any key type), and two
sorted arrays (slot hashes, int64 keys) for the many-user flush, where a million users a flush
would make a million Python objects and a header read each in the next flush
(docs/design/realtime.md, "Slot owners in arrays"). A slot is in one store at a time, under
the key claimed there last; either store may forget everything (at its cap), which costs a
header read, never a wrong owner.
"""

from __future__ import annotations

import numpy as np

DICT_CAP = 1 << 17  # entries in the dict (~100 bytes each); cleared when reached
ARRAY_CAP = 1 << 23  # entries in the arrays (16 bytes each: 128 MiB at the cap); cleared


def int_key_bytes(key: int) -> bytes:
    """`segment.key_bytes` of an int64 key (8 bytes little-endian, signed)."""
    return int(key).to_bytes(8, "little", signed=True)


class Owners:
    """Slot hash → key bytes of the key last claimed there (see the module docstring)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._dict: dict[int, bytes] = {}
        self._h = np.zeros(0, dtype=np.uint64)  # sorted, distinct
        self._k = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._dict) + int(self._h.size)

    def get(self, h: int) -> bytes | None:
        got = self._dict.get(h)
        if got is not None or not self._h.size:
            return got
        i = int(np.searchsorted(self._h, np.uint64(h)))
        if i < self._h.size and int(self._h[i]) == h:
            return int_key_bytes(int(self._k[i]))
        return None

    def set(self, h: int, kb: bytes) -> None:
        """Remember `kb` at slot `h`. A slot lives in one of the two stores only: were it left
        in the arrays under an older key, clearing the dict would bring that key back."""
        if self._h.size:
            i = int(np.searchsorted(self._h, np.uint64(h)))
            if i < self._h.size and int(self._h[i]) == h:
                if len(kb) == 8:
                    self._k[i] = int.from_bytes(kb, "little", signed=True)
                    return
                self._h, self._k = np.delete(self._h, i), np.delete(self._k, i)
        if len(self._dict) >= DICT_CAP:
            self._dict.clear()
        self._dict[h] = kb

    def update(self, pairs: list[tuple[int, bytes]]) -> None:
        """Many `set`s (keys of any type)."""
        if self._h.size:
            for h, kb in pairs:
                self.set(h, kb)
            return
        if len(self._dict) + len(pairs) > DICT_CAP:
            self._dict.clear()
        self._dict.update(pairs)

    def known_int(self, hashes: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Whether each slot `hashes[i]` is remembered as int64 key `keys[i]`'s (bool each)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        keys = np.asarray(keys, dtype=np.int64)
        out = np.zeros(hashes.size, dtype=bool)
        if self._h.size:
            i = np.minimum(np.searchsorted(self._h, hashes), self._h.size - 1)
            out = (self._h[i] == hashes) & (self._k[i] == keys)
        if self._dict:  # slots remembered in the dict (a slot is in one store only)
            in_dict = np.isin(hashes, np.fromiter(self._dict, dtype=np.uint64,
                                                   count=len(self._dict)))
            for j in np.flatnonzero(in_dict).tolist():
                out[j] = self._dict[int(hashes[j])] == int_key_bytes(int(keys[j]))
        return out

    def set_int(self, hashes: np.ndarray, keys: np.ndarray) -> None:
        """Remember int64 `keys[i]` at slot `hashes[i]` for each i (distinct slots)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        keys = np.asarray(keys, dtype=np.int64)
        if not hashes.size:
            return
        if self._dict:  # a dict entry of one of these slots would shadow the new owner
            for h in hashes[np.isin(hashes, np.fromiter(
                    self._dict, dtype=np.uint64, count=len(self._dict)))].tolist():
                del self._dict[h]
        order = np.argsort(hashes, kind="stable")
        hashes, keys = hashes[order], keys[order]
        if self._h.size + hashes.size > ARRAY_CAP:
            self._h, self._k = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
        if not self._h.size:
            self._h, self._k = hashes.copy(), keys.copy()
            return
        pos = np.searchsorted(self._h, hashes)
        found = np.zeros(hashes.size, dtype=bool)
        inside = pos < self._h.size
        found[inside] = self._h[pos[inside]] == hashes[inside]
        self._k[pos[found]] = keys[found]  # slots already remembered: the new owner
        new = ~found
        self._h = np.insert(self._h, pos[new], hashes[new])
        self._k = np.insert(self._k, pos[new], keys[new])
