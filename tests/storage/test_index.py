"""DRAM index: behaves like a dict of lists; checkpoint round trip (docs/format/index.md)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqvault import CorruptionError
from seqvault.index import Extent, HashIndex, pack_extents, unpack_extents, user_hash


def ext(i):
    return Extent(i % 7, i * 100, 50 + i, i + 1, i, i + 10)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 4)), max_size=300))
def test_index_matches_a_dict_model(ops):
    idx = HashIndex(capacity=16)
    model: dict[int, list[Extent]] = {}
    for n, (u, k) in enumerate(ops):
        h = user_hash(u.to_bytes(8, "little")) if u % 5 else u  # also tiny raw hashes: collisions
        exts = [ext(n * 10 + j) for j in range(k)]
        idx.set_extents(h, exts)
        if exts or h in model:
            model[h] = exts
    for h, exts in model.items():
        assert idx.extents_of(h) == exts
        assert idx.count_of(h) == sum(e.count for e in exts)
    assert idx.live_extents == sum(len(v) for v in model.values())
    again = HashIndex.from_bytes(idx.to_bytes())
    for h, exts in model.items():
        assert again.extents_of(h) == exts
    again.set_extents(12345, [ext(1)])  # free list survives the round trip
    assert again.extents_of(12345) == [ext(1)]


def test_bulk_add_users_vectorised():
    idx = HashIndex()
    hashes = [user_hash(i.to_bytes(8, "little")) for i in range(5000)]
    idx.add_users(hashes)
    assert len(idx) == 5000
    assert all(idx.find(h) == i for i, h in enumerate(hashes))
    assert idx.find(user_hash(b"nobody")) == -1


def test_X1_checkpoint_checksum_and_length():
    idx = HashIndex()
    idx.set_extents(5, [ext(1)])
    blob = bytearray(idx.to_bytes())
    blob[-1] ^= 1
    with pytest.raises(CorruptionError, match="checksum"):
        HashIndex.from_bytes(bytes(blob))
    with pytest.raises(CorruptionError, match="bytes"):
        HashIndex.from_bytes(bytes(blob[:-4]))


def test_delta_records_round_trip():
    exts = [ext(i) for i in range(5)]
    assert unpack_extents(pack_extents(exts)) == exts
    with pytest.raises(CorruptionError):
        unpack_extents(b"\x00" * 35)


def test_bytes_per_user_is_compact():
    idx = HashIndex()
    n = 20_000
    idx.add_users(user_hash(i.to_bytes(8, "little")) for i in range(n))
    for r in range(n):
        idx.set_extents(int(idx.u_hash[r]), [ext(r)])
    assert idx.nbytes / n < 100  # a dict of tuples takes ~236; the bench measures 1M users
