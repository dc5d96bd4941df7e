"""DRAM hash index: lookups of present and absent users, and checkpoint load, at 100k users."""

from __future__ import annotations

import numpy as np
import pytest

index = pytest.importorskip("seqvault.index")
segment = pytest.importorskip("seqvault.segment")

N_USERS = 100_000


@pytest.fixture(scope="module")
def built():
    idx = index.HashIndex()
    hashes = [index.user_hash(segment.key_bytes(u)[1]) for u in range(1, N_USERS + 1)]
    for i, h in enumerate(hashes):
        idx.set_extents(h, [index.Extent(0, i * 4096, 4096, 100, 0, 1)])
    return idx, hashes


@pytest.mark.benchmark(group="index lookup")
def test_index_find_present(benchmark, built):
    idx, hashes = built
    probe = [hashes[i] for i in np.random.default_rng(1).integers(0, N_USERS, 1_000)]

    def run():
        return sum(idx.find(h) >= 0 for h in probe)

    assert benchmark(run) == len(probe)


@pytest.mark.benchmark(group="index lookup")
def test_index_find_absent(benchmark, built):
    idx, _ = built
    probe = [index.user_hash(segment.key_bytes(-u)[1]) for u in range(1, 1_001)]

    def run():
        return sum(idx.find(h) >= 0 for h in probe)

    assert benchmark(run) == 0


@pytest.mark.benchmark(group="index lookup")
def test_index_hash_and_extents(benchmark, built):
    idx, _ = built
    users = np.random.default_rng(2).integers(1, N_USERS + 1, 1_000).tolist()

    def run():
        return sum(len(idx.extents_of(index.user_hash(segment.key_bytes(u)[1]))) for u in users)

    assert benchmark(run) == len(users)


@pytest.mark.benchmark(group="index checkpoint")
def test_index_checkpoint_load(benchmark, built):
    idx, _ = built
    blob = idx.to_bytes()
    benchmark.extra_info["index_bytes_per_user"] = idx.nbytes / N_USERS
    loaded = benchmark(index.HashIndex.from_bytes, blob)
    assert len(loaded) == N_USERS
