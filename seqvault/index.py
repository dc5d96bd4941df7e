"""The DRAM hash index: user → that user's extents, in compact numpy arrays.

Three tables (docs/format/index.md):

* ``slots``  — open addressing with linear probing over the 64-bit mmh3 hash of the user key;
  each slot holds a user row number or -1. Capacity is a power of two, load at most 0.7.
* user rows  — ``u_hash`` (uint64), ``u_head`` (int32: the user's newest extent, -1 = none),
  ``u_count`` (uint32: events in sealed extents).
* extents    — ``e_file`` (uint32), ``e_off`` (uint32), ``e_len`` (uint32), ``e_count``
  (uint32), ``e_min``/``e_max`` (int64 timestamps), ``e_next`` (int32: the user's next older
  extent, -1 = end). Freed extent slots are chained through ``e_next`` from ``free_head``.

A user with one extent costs 4·cap/n + 16 + 36 bytes — about 60 at one million users (cap =
2²¹ slots) — against ~240–340 for a dict of tuples. Offsets are 32-bit because extent files
are capped below 4 GiB (`MAX_FILE_BYTES`).
The arrays serialise to one checkpoint blob (kept in LMDB) that loads with a single copy.

Hash collisions (docs/format/index.md, "Slot hashes"): a row is keyed by the user's *slot hash*,
`user_hash(key)` unless that slot already belonged to another key when the user was first
published; then an alternate (`alt_hash(key, i)`, the first free one). Such users are listed in
`aliases` (key bytes → slot hash), a small table saved inside the checkpoint: never in LMDB,
so deleting the user and rewriting the checkpoint erases its key. `slot_of` is the one way from
a key to its row.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import mmh3
import numpy as np

from .errors import CorruptionError, FormatVersionError

HASH_SEED = 0x5EC5_A017
MAX_FILE_BYTES = (1 << 32) - 1  # extent offsets are uint32
EXTENT_SLOT_BYTES = 36  # file, off, len, count (4 each) + min_ts, max_ts (8 each) + next (4)
MAX_LOAD = 0.7
CKPT_MAGIC = b"SVIX"
# 1: the arrays only. 2: followed by the alias table (store format 4). Version 1 still loads.
CKPT_VERSION = 2
_CKPT_HEAD = struct.Struct("<4sHHQQQqI")  # magic, version, reserved, n_users, n_ext, cap,
#                                           free_head, crc32 of the arrays (and aliases)
_ALIAS_HEAD = struct.Struct("<QQ")  # n_aliases, bytes of the entries that follow
_ALIAS_ENTRY = struct.Struct("<QI")  # slot hash, key length (the key bytes follow)
# Alternates tried before giving up on a key (each is free with probability ≥ 0.3 at the
# index's maximum load; with 64-bit hashes the first is free unless 2⁶⁴ is nearly full).
MAX_ALTERNATES = 4096

# One extent as stored in index deltas (docs/format/index.md, "Delta record").
EXTENT_DTYPE = np.dtype([("file", "<u4"), ("off", "<u8"), ("len", "<u4"), ("count", "<u4"),
                         ("min_ts", "<i8"), ("max_ts", "<i8")])


def _weak_bits_from_env() -> int:
    """Test-only fault point `SEQVAULT_FAULT=hash:weak[@bits]` (seqvault/faults.py): slot
    hashes keep only their low `bits` bits (default 8), so collisions happen on purpose."""
    for part in os.environ.get("SEQVAULT_FAULT", "").split(","):
        name, _, n = part.strip().partition("@")
        if name == "hash:weak":
            return int(n) if n else 8
    return 0


_weak_mask = (1 << _weak_bits_from_env()) - 1  # 0: full 64-bit hashes


def set_weak_hash(bits: int) -> None:
    """TEST ONLY (seqvault.faults.weak_hash): keep `bits` bits of every slot hash; 0 = off."""
    global _weak_mask
    _weak_mask = (1 << bits) - 1 if bits else 0


def user_hash(kbytes: bytes) -> int:
    """64-bit mmh3 of the canonical key bytes (see segment.key_bytes): the user's default slot
    hash and the first half of its identity (`key_id`)."""
    h = int(mmh3.hash64(kbytes, HASH_SEED, signed=False)[0])
    return h & _weak_mask if _weak_mask else h


def key_id(kbytes: bytes) -> tuple[int, int]:
    """(user_hash, tag): 128 bits naming a key where no key may be stored (LMDB's "sealed
    through" records). `tag` is the other half of the same mmh3 call and is never weakened."""
    a, b = mmh3.hash64(kbytes, HASH_SEED, signed=False)
    return (int(a) & _weak_mask if _weak_mask else int(a)), int(b)


def alt_hash(kbytes: bytes, i: int) -> int:
    """The key's i-th alternate slot hash (i ≥ 1): mmh3 with seed HASH_SEED + i."""
    h = int(mmh3.hash64(kbytes, (HASH_SEED + i) & 0xFFFF_FFFF, signed=False)[0])
    return h & _weak_mask if _weak_mask else h


@dataclass(frozen=True)
class Extent:
    file: int
    off: int
    length: int
    count: int
    min_ts: int
    max_ts: int


class HashIndex:
    """Open-addressing hash index held in numpy arrays. Not thread-safe: the store locks."""

    def __init__(self, capacity: int = 1024) -> None:
        cap = 1
        while cap < max(capacity, 16):
            cap <<= 1
        self.slots = np.full(cap, -1, dtype=np.int32)
        self.u_hash = np.zeros(16, dtype=np.uint64)
        self.u_head = np.full(16, -1, dtype=np.int32)
        self.u_count = np.zeros(16, dtype=np.uint32)
        self.n_users = 0
        self.e_file = np.zeros(16, dtype=np.uint32)
        self.e_off = np.zeros(16, dtype=np.uint32)
        self.e_len = np.zeros(16, dtype=np.uint32)
        self.e_count = np.zeros(16, dtype=np.uint32)
        self.e_min = np.zeros(16, dtype=np.int64)
        self.e_max = np.zeros(16, dtype=np.int64)
        self.e_next = np.full(16, -1, dtype=np.int32)
        self.n_ext = 0  # high-water mark of extent slots
        self.free_head = -1
        self.n_free = 0
        self.aliases: dict[bytes, int] = {}  # key bytes → slot hash, for users not at user_hash
        self.alias_slots: dict[int, bytes] = {}  # the reverse

    # ------------------------------------------------------------------ lookups
    def slot_of(self, kb: bytes) -> int:
        """The slot hash of the key with canonical bytes `kb`: its alias, else `user_hash`.
        A key that was never published may get another slot when it is (its default slot can
        belong to another key): a read then finds that key's segments (reads.ForeignSegment)."""
        if self.aliases:
            a = self.aliases.get(kb)
            if a is not None:
                return a
        return user_hash(kb)

    def set_alias(self, kb: bytes, h: int | None) -> None:
        """Record (or with None, forget) that the key `kb` lives at slot hash `h`."""
        old = self.aliases.pop(kb, None)
        if old is not None:
            self.alias_slots.pop(old, None)
        if h is not None:
            self.aliases[kb] = h
            self.alias_slots[h] = kb

    def has_extents(self, h: int) -> bool:
        row = self.find(h)
        return row >= 0 and int(self.u_head[row]) >= 0

    def find(self, h: int) -> int:
        """Row of the user with hash `h`, or -1."""
        slots = self.slots
        mask = slots.size - 1
        pos = h & mask
        u_hash = self.u_hash
        hv = np.uint64(h)
        while True:
            row = int(slots[pos])
            if row < 0:
                return -1
            if u_hash[row] == hv:
                return row
            pos = (pos + 1) & mask

    def extents(self, row: int) -> list[Extent]:
        """The user's extents, newest first."""
        out = []
        e = int(self.u_head[row]) if row >= 0 else -1
        while e >= 0:
            out.append(Extent(int(self.e_file[e]), int(self.e_off[e]), int(self.e_len[e]),
                              int(self.e_count[e]), int(self.e_min[e]), int(self.e_max[e])))
            e = int(self.e_next[e])
        return out

    def extents_of(self, h: int) -> list[Extent]:
        return self.extents(self.find(h))

    def newest_walk(self, row: int, last: int, have: int, lo: int | None
                    ) -> tuple[list[int], int] | None:
        """The index half of a short read's plan (reads.newest_plan; docs/design/realtime.md,
        "Walking the extent list"): the user's extent slots newest first while fewer than
        `last` events are chosen (`have` already chosen, the oldest of them starting at `lo`),
        and the number of extents the user has; None when time order and arrival order
        disagree (a chosen extent ends after a newer chosen source starts, or one left out
        ends after the oldest chosen one starts). Reads the arrays through their memoryviews
        (`.data`, which index to Python ints): no object per extent, a few int steps each."""
        e = int(self.u_head[row]) if row >= 0 else -1
        if e < 0:
            return [], 0
        nxt, e_min, e_max, e_count = self.e_next.data, self.e_min.data, self.e_max.data, self.e_count.data
        chosen: list[int] = []
        while e >= 0 and have < last:
            if lo is not None and e_max[e] > lo:
                return None
            chosen.append(e)
            have += e_count[e]
            lo = e_min[e]
            e = nxt[e]
        n = len(chosen)
        while e >= 0:  # the extents left out: none may end after the oldest chosen starts
            if e_max[e] > lo:  # type: ignore[operator]  # lo is set: one extent was chosen
                return None
            n += 1
            e = nxt[e]
        return chosen, n

    def chain(self, row: int) -> list[int]:
        """The user's extent slots, newest first (no object per extent but the slot's int)."""
        e = int(self.u_head[row]) if row >= 0 else -1
        nxt = self.e_next.data
        out: list[int] = []
        while e >= 0:
            out.append(e)
            e = nxt[e]
        return out

    def extent_at(self, e: int) -> Extent:
        """The extent in slot `e`."""
        # .item: a Python int without a numpy scalar first (~0.2 us less per short read)
        return Extent(self.e_file.item(e), self.e_off.item(e), self.e_len.item(e),
                      self.e_count.item(e), self.e_min.item(e), self.e_max.item(e))

    def count_of(self, h: int) -> int:
        row = self.find(h)
        return int(self.u_count[row]) if row >= 0 else 0

    def __len__(self) -> int:
        return self.n_users

    @property
    def total_events(self) -> int:
        return int(self.u_count[: self.n_users].sum(dtype=np.uint64))

    @property
    def live_extents(self) -> int:
        return self.n_ext - self.n_free

    @property
    def nbytes(self) -> int:
        arrays = (self.slots, self.u_hash, self.u_head, self.u_count, self.e_file, self.e_off,
                  self.e_len, self.e_count, self.e_min, self.e_max, self.e_next)
        return int(sum(a.nbytes for a in arrays))

    def rows(self) -> range:
        return range(self.n_users)

    # ------------------------------------------------------------------ updates
    def set_extents(self, h: int, extents: Sequence[Extent]) -> None:
        """Replace the user's extent list (newest first). Creates the user when new."""
        row = self.find(h)
        if row < 0:
            if not extents:
                return
            row = self._add_user(h)
        self._free_chain(int(self.u_head[row]))
        head = -1
        total = 0
        for ext in reversed(extents):
            e = self._alloc_extent()
            self.e_file[e] = ext.file
            if ext.off + ext.length > MAX_FILE_BYTES:
                raise ValueError(f"extent at {ext.off}+{ext.length} is past the 4 GiB file limit")
            self.e_off[e] = ext.off
            self.e_len[e] = ext.length
            self.e_count[e] = ext.count
            self.e_min[e] = ext.min_ts
            self.e_max[e] = ext.max_ts
            self.e_next[e] = head
            head = e
            total += ext.count
        self.u_head[row] = head
        self.u_count[row] = total

    def _free_chain(self, e: int) -> None:
        while e >= 0:
            nxt = int(self.e_next[e])
            self.e_next[e] = self.free_head
            self.free_head = e
            self.n_free += 1
            e = nxt

    def _alloc_extent(self) -> int:
        if self.free_head >= 0:
            e = self.free_head
            self.free_head = int(self.e_next[e])
            self.n_free -= 1
            return e
        if self.n_ext == self.e_file.size:
            self._grow_extents(max(16, self.n_ext + self.n_ext // 2))
        e = self.n_ext
        self.n_ext += 1
        return e

    def _grow_extents(self, size: int) -> None:
        for name in ("e_file", "e_off", "e_len", "e_count", "e_min", "e_max", "e_next"):
            old = getattr(self, name)
            new = np.full(size, -1, dtype=old.dtype) if name == "e_next" else np.zeros(size, old.dtype)
            new[: old.size] = old
            setattr(self, name, new)

    def _grow_users(self, size: int) -> None:
        for name, fill in (("u_hash", 0), ("u_head", -1), ("u_count", 0)):
            old = getattr(self, name)
            new = np.full(size, fill, dtype=old.dtype)
            new[: old.size] = old
            setattr(self, name, new)

    def _add_user(self, h: int) -> int:
        if (self.n_users + 1) > MAX_LOAD * self.slots.size:
            self._rehash(self.slots.size * 2)
        if self.n_users == self.u_hash.size:
            self._grow_users(max(16, self.n_users + self.n_users // 2))
        row = self.n_users
        self.n_users += 1
        self.u_hash[row] = h
        mask = self.slots.size - 1
        pos = h & mask
        while self.slots[pos] >= 0:
            pos = (pos + 1) & mask
        self.slots[pos] = row
        return row

    def add_users(self, hashes: Iterable[int]) -> None:
        """Insert many new users at once (bulk load): vectorised, no per-user Python loop."""
        hs = np.fromiter(hashes, dtype=np.uint64)
        if hs.size == 0:
            return
        need = self.n_users + hs.size
        if need > MAX_LOAD * self.slots.size:
            cap = self.slots.size
            while need > MAX_LOAD * cap:
                cap <<= 1
            self._rehash(cap)
        if need > self.u_hash.size:
            self._grow_users(need)
        rows = np.arange(self.n_users, need, dtype=np.int32)
        self.u_hash[self.n_users : need] = hs
        self.n_users = need
        _place(self.slots, hs, rows)

    def _rehash(self, cap: int) -> None:
        self.slots = np.full(cap, -1, dtype=np.int32)
        _place(self.slots, self.u_hash[: self.n_users], np.arange(self.n_users, dtype=np.int32))

    # ------------------------------------------------------------------ checkpoint
    def to_bytes(self) -> bytes:
        n, m = self.n_users, self.n_ext
        parts: list[np.ndarray] = [self.slots, self.u_hash[:n], self.u_head[:n], self.u_count[:n], self.e_file[:m],
                 self.e_off[:m], self.e_len[:m], self.e_count[:m], self.e_min[:m], self.e_max[:m],
                 self.e_next[:m]]
        body = b"".join(np.ascontiguousarray(p).astype(p.dtype.newbyteorder("<")).tobytes()
                        for p in parts)
        entries = b"".join(_ALIAS_ENTRY.pack(h, len(kb)) + kb
                           for kb, h in sorted(self.aliases.items()))
        body += _ALIAS_HEAD.pack(len(self.aliases), len(entries)) + entries
        head = _CKPT_HEAD.pack(CKPT_MAGIC, CKPT_VERSION, 0, n, m, self.slots.size,
                               self.free_head, zlib.crc32(body))
        return head + body

    @classmethod
    def from_bytes(cls, blob: bytes | memoryview) -> HashIndex:
        if len(blob) < _CKPT_HEAD.size:
            raise CorruptionError("index checkpoint: shorter than its header")
        magic, version, _r, n, m, cap, free_head, crc = _CKPT_HEAD.unpack_from(blob, 0)
        if magic != CKPT_MAGIC:
            raise CorruptionError(f"index checkpoint: bad magic {bytes(magic)!r}")
        if version > CKPT_VERSION:
            raise FormatVersionError(f"index checkpoint version {version} is newer than this "
                                     f"SeqVault reads ({CKPT_VERSION})")
        body = memoryview(blob)[_CKPT_HEAD.size :]
        expect = cap * 4 + n * 16 + m * EXTENT_SLOT_BYTES
        arrays = expect
        if version >= 2:  # the alias table follows (its length is checked once the CRC is)
            expect += _ALIAS_HEAD.size
        if len(body) < expect or (version < 2 and len(body) != expect):
            raise CorruptionError(f"index checkpoint: {len(body)} bytes after the header, "
                                  f"expected {expect}{' or more' if version >= 2 else ''}")
        if zlib.crc32(body) != crc:
            raise CorruptionError("index checkpoint: checksum mismatch")
        aliases = _parse_aliases(body, arrays) if version >= 2 else {}
        idx = cls.__new__(cls)
        pos = 0

        def take(dtype: str, count: int) -> np.ndarray:
            nonlocal pos
            dt = np.dtype(dtype)
            arr = np.frombuffer(body, dtype=dt, count=count, offset=pos).copy()
            pos += dt.itemsize * count
            return arr

        idx.slots = take("<i4", cap)
        idx.u_hash, idx.u_head, idx.u_count = take("<u8", n), take("<i4", n), take("<u4", n)
        idx.e_file, idx.e_off, idx.e_len = take("<u4", m), take("<u4", m), take("<u4", m)
        idx.e_count, idx.e_min, idx.e_max = take("<u4", m), take("<i8", m), take("<i8", m)
        idx.e_next = take("<i4", m)
        idx.n_users, idx.n_ext, idx.free_head = n, m, free_head
        idx.aliases = aliases
        idx.alias_slots = {h: kb for kb, h in aliases.items()}
        free = 0
        e = free_head
        while e >= 0:
            free += 1
            e = int(idx.e_next[e])
        idx.n_free = free
        return idx


    # ------------------------------------------------------------------ many users at once
    def find_many(self, hashes: np.ndarray) -> np.ndarray:
        """`find` of every hash (int64 rows, -1: absent), probing all keys together."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        slots = self.slots
        mask = np.uint64(slots.size - 1)
        rows = np.full(hashes.size, -1, dtype=np.int64)
        pos = (hashes & mask).astype(np.int64)
        pending = np.arange(hashes.size)
        u_hash = self.u_hash
        while pending.size:
            row = slots[pos[pending]].astype(np.int64)
            empty = row < 0
            hit = ~empty
            hit[hit] = u_hash[row[hit]] == hashes[pending[hit]]
            rows[pending[hit]] = row[hit]
            pending = pending[~(empty | hit)]
            pos[pending] = (pos[pending] + 1) & (slots.size - 1)
        return rows


    def chains(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The extent slots of each row's list, newest first, concatenated: (slots, counts per
        row); a row of -1 has none. The lists are walked in lockstep, one step per round."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = np.zeros(rows.size, dtype=np.int64)
        cur = np.full(rows.size, -1, dtype=np.int64)
        has = rows >= 0
        cur[has] = self.u_head[rows[has]]
        steps: list[tuple[np.ndarray, np.ndarray]] = []  # (which rows, their slot) per round
        live = np.flatnonzero(cur >= 0)
        while live.size:
            slot = cur[live]
            steps.append((live, slot))
            counts[live] += 1
            cur[live] = self.e_next[slot]
            live = live[cur[live] >= 0]
        if not steps:
            return np.zeros(0, dtype=np.int64), counts
        who = np.concatenate([w for w, _s in steps])
        slot = np.concatenate([s for _w, s in steps]).astype(np.int64)
        order = np.argsort(who, kind="stable")  # by row, rounds (newest first) within a row
        return slot[order], counts


    def extent_records(self, slots: np.ndarray) -> np.ndarray:
        """The extents in these slots as EXTENT_DTYPE records."""
        out = np.zeros(slots.size, dtype=EXTENT_DTYPE)
        out["file"] = self.e_file[slots]
        out["off"] = self.e_off[slots]
        out["len"] = self.e_len[slots]
        out["count"] = self.e_count[slots]
        out["min_ts"] = self.e_min[slots]
        out["max_ts"] = self.e_max[slots]
        return out


    def set_extents_many(self, batch: ExtentBatch) -> None:
        """`set_extents(h, list)` for every user of `batch` (distinct hashes), as whole-array
        steps: absent users with extents are added, old lists freed, new slots allocated (the freed
        ones first) and linked newest first."""
        n = len(batch)
        if n == 0:
            return
        ext = batch.ext
        if ext.size and bool(((ext["off"].astype(np.uint64) + ext["len"]) > MAX_FILE_BYTES).any()):
            i = int(np.flatnonzero((ext["off"].astype(np.uint64) + ext["len"]) > MAX_FILE_BYTES)[0])
            raise ValueError(f"extent at {int(ext['off'][i])}+{int(ext['len'][i])} is past the 4 GiB "
                             "file limit")
        rows = self.find_many(batch.hashes)
        new = (rows < 0) & (batch.counts > 0)
        if new.any():
            self.add_users(batch.hashes[new].tolist())
            rows[new] = self.find_many(batch.hashes[new])
        keep = rows >= 0  # absent users with an empty list stay absent
        rows, counts = rows[keep], batch.counts[keep]
        starts = batch.starts[keep]
        old, _n = self.chains(rows)
        need = int(counts.sum())
        slots = self._allocate_many(old, need)
        # Link each user's new slots newest first; the last one ends the list.
        nxt = np.full(need, -1, dtype=np.int64)
        if need > 1:
            nxt[:-1] = slots[1:]
        first = np.zeros(counts.size, dtype=np.int64)
        np.cumsum(counts[:-1], out=first[1:])
        has = counts > 0
        last = first + counts - 1
        nxt[last[has]] = -1
        src = (np.repeat(starts - first, counts) + np.arange(need)) if need else np.zeros(0, np.int64)
        recs = ext[src]
        self.e_file[slots] = recs["file"]
        self.e_off[slots] = recs["off"]
        self.e_len[slots] = recs["len"]
        self.e_count[slots] = recs["count"]
        self.e_min[slots] = recs["min_ts"]
        self.e_max[slots] = recs["max_ts"]
        self.e_next[slots] = nxt
        heads = np.full(rows.size, -1, dtype=np.int64)
        heads[has] = slots[first[has]]
        self.u_head[rows] = heads
        totals = np.zeros(rows.size, dtype=np.uint64)
        if need:
            per = recs["count"].astype(np.uint64)
            totals[has] = np.add.reduceat(per, first[has])
        self.u_count[rows] = totals


    def _allocate_many(self, freed: np.ndarray, need: int) -> np.ndarray:
        """`need` extent slots: the just-freed ones first, then the free list, then new ones at the
        high-water mark; freed slots not reused go onto the free list."""
        freed = freed.astype(np.int64)
        take = freed[:need]
        rest = freed[need:]
        out = [take]
        short = need - take.size
        if short and self.free_head >= 0:
            got: list[int] = []
            e = self.free_head
            while e >= 0 and len(got) < short:
                got.append(e)
                e = int(self.e_next[e])
            self.free_head = e
            self.n_free -= len(got)
            out.append(np.asarray(got, dtype=np.int64))
            short -= len(got)
        if short:
            start = self.n_ext
            if start + short > self.e_file.size:
                self._grow_extents(max(16, start + short, self.n_ext + self.n_ext // 2))
            self.n_ext = start + short
            out.append(np.arange(start, start + short, dtype=np.int64))
        if rest.size:  # onto the free list, in order
            self.e_next[rest[:-1]] = rest[1:]
            self.e_next[rest[-1]] = self.free_head
            self.free_head = int(rest[0])
            self.n_free += int(rest.size)
        return np.concatenate(out)


def _parse_aliases(body: memoryview, arrays: int) -> dict[bytes, int]:
    """The alias table after the arrays (checkpoint version 2, docs/format/index.md)."""
    if len(body) < arrays + _ALIAS_HEAD.size:
        raise CorruptionError(f"index checkpoint: {len(body)} bytes, shorter than its arrays "
                              f"and alias table head ({arrays + _ALIAS_HEAD.size})")
    count, nbytes = _ALIAS_HEAD.unpack_from(body, arrays)
    pos = arrays + _ALIAS_HEAD.size
    if len(body) != pos + nbytes:
        raise CorruptionError(f"index checkpoint: {len(body) - pos} bytes of aliases, the "
                              f"header says {nbytes}")
    out: dict[bytes, int] = {}
    for _ in range(count):
        if pos + _ALIAS_ENTRY.size > len(body):
            raise CorruptionError(f"index checkpoint: alias table ends inside entry {len(out)}")
        h, klen = _ALIAS_ENTRY.unpack_from(body, pos)
        pos += _ALIAS_ENTRY.size
        if pos + klen > len(body):
            raise CorruptionError(f"index checkpoint: alias key of {klen} bytes passes the end")
        out[bytes(body[pos:pos + klen])] = int(h)
        pos += klen
    if pos != len(body):
        raise CorruptionError(f"index checkpoint: {len(body) - pos} bytes after {count} aliases")
    return out


def _place(slots: np.ndarray, hashes: np.ndarray, rows: np.ndarray) -> None:
    """Vectorised linear-probing insert: in each round every unplaced key tries its current slot;
    one winner per free slot takes it, the rest move one slot on. Rounds = longest probe."""
    mask = np.uint64(slots.size - 1)
    pos = (hashes & mask).astype(np.int64)
    pending = np.arange(hashes.size)
    while pending.size:
        p = pos[pending]
        free = slots[p] < 0
        cand = pending[free]
        cand_pos = p[free]
        _, first = np.unique(cand_pos, return_index=True)
        winners = cand[first]
        slots[pos[winners]] = rows[winners]
        placed = np.zeros(hashes.size, dtype=bool)
        placed[winners] = True
        pending = pending[~placed[pending]]
        pos[pending] = (pos[pending] + 1) & (slots.size - 1)


def pack_extents(extents: Sequence[Extent]) -> bytes:
    arr = np.zeros(len(extents), dtype=EXTENT_DTYPE)
    for i, e in enumerate(extents):
        arr[i] = (e.file, e.off, e.length, e.count, e.min_ts, e.max_ts)
    return arr.tobytes()


def unpack_extents(blob: bytes | memoryview) -> list[Extent]:
    if len(blob) % EXTENT_DTYPE.itemsize:
        raise CorruptionError(f"index delta: {len(blob)} bytes is not a whole number of extents")
    arr = np.frombuffer(blob, dtype=EXTENT_DTYPE)
    return [Extent(int(r["file"]), int(r["off"]), int(r["len"]), int(r["count"]),
                   int(r["min_ts"]), int(r["max_ts"])) for r in arr]


# ---------------------------------------------------------------------- many users at once
# What a flush of many small users needs from the index without a Python step per user
# (docs/design/realtime.md, "Many-user batches"). Same semantics as the per-user methods.

_C1 = np.uint64(0x87C37B91114253D5)
_C2 = np.uint64(0x4CF5AD432745937F)


def _fmix64(k: np.ndarray) -> np.ndarray:
    k = k ^ (k >> np.uint64(33))
    k = k * np.uint64(0xFF51AFD7ED558CCD)
    k = k ^ (k >> np.uint64(33))
    k = k * np.uint64(0xC4CEB9FE1A85EC53)
    return k ^ (k >> np.uint64(33))


def user_hashes_int64(keys: np.ndarray) -> np.ndarray:
    """`user_hash` of many int64 keys (their 8 little-endian bytes): MurmurHash3 x64-128's
    first half for an 8-byte input, in uint64 arithmetic (wraps like the C code)."""
    with np.errstate(over="ignore"):
        k1 = np.asarray(keys).astype("<i8").view(np.uint64).astype(np.uint64)
        seed = np.uint64(HASH_SEED)
        k1 = k1 * _C1
        k1 = (k1 << np.uint64(31)) | (k1 >> np.uint64(33))
        k1 = k1 * _C2
        h1 = seed ^ k1
        h2 = np.full(k1.shape, seed, dtype=np.uint64)
        length = np.uint64(8)
        h1 = h1 ^ length
        h2 = h2 ^ length
        h1 = h1 + h2
        h2 = h2 + h1
        h1 = _fmix64(h1)
        h2 = _fmix64(h2)
        h = h1 + h2
        return h & np.uint64(_weak_mask) if _weak_mask else h  # hash:weak, as `user_hash`


@dataclass
class ExtentBatch:
    """Many users' complete new extent lists (newest first), in arrays: user i has hash
    hashes[i] and the extents ext[starts[i] : starts[i] + counts[i]] (records of
    EXTENT_DTYPE). What `set_extents_many` takes and index deltas are cut from."""

    hashes: np.ndarray  # uint64
    counts: np.ndarray  # int64
    ext: np.ndarray  # EXTENT_DTYPE

    @property
    def starts(self) -> np.ndarray:
        out = np.zeros(self.counts.size, dtype=np.int64)
        np.cumsum(self.counts[:-1], out=out[1:])
        return out

    def __len__(self) -> int:
        return int(self.hashes.size)

    def extents(self, i: int) -> list[Extent]:
        s = int(self.starts[i])
        return unpack_extents(self.ext[s:s + int(self.counts[i])].tobytes())
