"""Shard map: the scalar and vectorised forms agree; jump hash moves only users to the new shard."""

from __future__ import annotations

import mmh3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqvault.cluster.shardmap import (
    CLUSTER_SEED,
    check_shards,
    hash_int64,
    jump_hash,
    jump_hash_many,
    key_hash,
    shard_of,
    shards_of,
)
from seqvault.errors import ValidationError
from seqvault.index import HASH_SEED

int64s = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(int64s, min_size=1, max_size=50), st.integers(min_value=1, max_value=5000))
def test_vectorised_int_keys_agree_with_scalar(keys: list[int], n: int) -> None:
    vec = shards_of(np.array(keys, dtype=np.int64), n)
    assert vec.tolist() == [shard_of(k, n) for k in keys]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=20), min_size=1, max_size=30),
       st.integers(min_value=1, max_value=2000))
def test_vectorised_string_keys_agree_with_scalar(keys: list[str], n: int) -> None:
    arr = np.empty(len(keys), dtype=object)
    arr[:] = keys
    assert shards_of(arr, n).tolist() == [shard_of(k, n) for k in keys]


@settings(max_examples=200, deadline=None)
@given(st.lists(int64s, min_size=1, max_size=50))
def test_numpy_murmur_equals_mmh3(keys: list[int]) -> None:
    got = hash_int64(np.array(keys, dtype=np.int64)).tolist()
    want = [mmh3.hash64(k.to_bytes(8, "little", signed=True), CLUSTER_SEED, signed=False)[0]
            for k in keys]
    assert got == want == [key_hash(k) for k in keys]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 64) - 1), st.integers(1, 300))
def test_growing_moves_only_into_the_new_shard(h: int, n: int) -> None:
    a, b = jump_hash(h, n), jump_hash(h, n + 1)
    assert 0 <= a < n
    assert b == a or b == n
    assert jump_hash_many(np.array([h], dtype=np.uint64), n).tolist() == [a]


def test_balance_and_moved_fraction() -> None:
    keys = np.arange(200_000, dtype=np.int64)
    s16 = shards_of(keys, 16)
    counts = np.bincount(s16, minlength=16)
    assert counts.min() > 0.9 * counts.mean()
    moved = (shards_of(keys, 17) != s16).mean()
    assert abs(moved - 1 / 17) < 0.01


def test_seed_differs_from_the_index_hash() -> None:
    assert CLUSTER_SEED != HASH_SEED


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4", 1 << 21])
def test_bad_shard_count_is_refused(bad: object) -> None:
    with pytest.raises(ValidationError, match="shards"):
        check_shards(bad)
