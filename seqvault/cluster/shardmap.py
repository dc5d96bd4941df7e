"""User → shard: `jump_consistent_hash(mmh3_64(key_bytes(user), CLUSTER_SEED), S)`.

Two forms that must agree bit for bit (tests/cluster/test_shardmap.py checks it with
Hypothesis): a scalar one for single requests and a numpy one for ingest and scatter-gather.

The seed differs from the store index's `HASH_SEED` on purpose: with the same hash, every user of
a shard would share the same low-entropy slice of the hash space, and the per-store hash table's
buckets would be correlated with the shard number (see docs/design/cluster.md, "Shard map").
The key bytes are the store's canonical key bytes (`segment.key_bytes`): int64 keys are 8 bytes
little-endian, string keys are UTF-8, so one user id hashes the same in every process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import mmh3
import numpy as np

from ..errors import ValidationError
from ..segment import key_bytes

CLUSTER_SEED = 0xC1A5_7E55  # != index.HASH_SEED (0x5EC5_A017)
HASH_VERSION = 1  # bump when the hash, seed or key bytes change: every user may move
MAX_SHARDS = 1 << 20

_M64 = (1 << 64) - 1
_JUMP_MUL = 2862933555777941757
_C1 = np.uint64(0x87C37B91114253D5)
_C2 = np.uint64(0x4CF5AD432745937F)


def check_shards(n_shards: Any) -> int:
    if isinstance(n_shards, bool) or not isinstance(n_shards, int | np.integer) or not (
            1 <= int(n_shards) <= MAX_SHARDS):
        raise ValidationError(f"shards: {n_shards!r} must be an integer from 1 to {MAX_SHARDS}",
                              column="shards", value=n_shards)
    return int(n_shards)


def key_hash(user: int | str, seed: int = CLUSTER_SEED) -> int:
    """Unsigned 64-bit mmh3 (x64_128, first half) of the user's canonical key bytes."""
    return int(mmh3.hash64(key_bytes(user)[1], seed, signed=False)[0])


def jump_hash(key: int, n_buckets: int) -> int:
    """Lamping & Veach's jump consistent hash: growing S to S+1 moves only the keys that land
    in the new bucket S, about 1/(S+1) of them."""
    b, j = -1, 0
    key &= _M64
    while j < n_buckets:
        b = j
        key = (key * _JUMP_MUL + 1) & _M64
        j = int(float(b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_of(user: int | str, n_shards: int, seed: int = CLUSTER_SEED) -> int:
    return jump_hash(key_hash(user, seed), n_shards)


# ---------------------------------------------------------------------- vectorised form
def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _fmix(k: np.ndarray) -> np.ndarray:
    k = k ^ (k >> np.uint64(33))
    k = k * np.uint64(0xFF51AFD7ED558CCD)
    k = k ^ (k >> np.uint64(33))
    k = k * np.uint64(0xC4CEB9FE1A85EC53)
    return k ^ (k >> np.uint64(33))


def hash_int64(keys: np.ndarray, seed: int = CLUSTER_SEED) -> np.ndarray:
    """MurmurHash3_x64_128 (first half) of 8-byte little-endian int64 keys, in numpy: the
    same value as `mmh3.hash64(key.to_bytes(8, "little", signed=True), seed)[0]` (an 8-byte
    input has no 16-byte block, only the tail word k1)."""
    k1 = np.ascontiguousarray(keys, dtype=np.int64).view(np.uint64)
    n = np.uint64(8)
    with np.errstate(over="ignore"):
        h1 = np.full(k1.shape, seed & 0xFFFFFFFF, dtype=np.uint64)
        h2 = h1.copy()
        k1 = _rotl(k1 * _C1, 31) * _C2
        h1 = (h1 ^ k1) ^ n
        h2 = h2 ^ n
        h1 = h1 + h2
        h2 = h2 + h1
        h1 = _fmix(h1)
        h2 = _fmix(h2)
        return h1 + h2


def jump_hash_many(hashes: np.ndarray, n_buckets: int) -> np.ndarray:
    """`jump_hash` over an array of uint64 hashes (same float64 arithmetic, so same answers)."""
    key = np.ascontiguousarray(hashes, dtype=np.uint64).copy()
    b = np.full(key.shape, -1, dtype=np.int64)
    j = np.zeros(key.shape, dtype=np.int64)
    active = j < n_buckets
    with np.errstate(over="ignore"):
        while active.any():
            idx = np.flatnonzero(active)
            b[idx] = j[idx]
            k = key[idx] * np.uint64(_JUMP_MUL) + np.uint64(1)
            key[idx] = k
            denom = (k >> np.uint64(33)).astype(np.float64) + 1.0
            j[idx] = ((b[idx] + 1).astype(np.float64) * (float(1 << 31) / denom)).astype(np.int64)
            active[idx] = j[idx] < n_buckets
    return b


def shards_of(users: Sequence[Any] | np.ndarray, n_shards: int,
              seed: int = CLUSTER_SEED) -> np.ndarray:
    """Shard of each user (int64 array): numpy all the way for int keys, mmh3 per key for
    strings (mmh3 is C; the jump step stays vectorised)."""
    arr = np.asarray(users)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind in "iu":
        hashes = hash_int64(arr.astype(np.int64), seed)
    else:
        hashes = np.fromiter((mmh3.hash64(key_bytes(u)[1], seed, signed=False)[0]
                              for u in _as_keys(arr)), dtype=np.uint64, count=arr.size)
    return jump_hash_many(hashes, n_shards)


def _as_keys(arr: np.ndarray) -> Iterable[int | str]:
    for u in arr.tolist():
        yield u if isinstance(u, str | int) else str(u)
