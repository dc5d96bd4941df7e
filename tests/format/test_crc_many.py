"""crc_many: the numpy reference and the compiled kernel (seqvault/native_crc.c) against zlib,
and the kernel's refusal of bad arguments."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from seqvault import crc_many
from tests.conftest import native_required


@pytest.fixture(params=["python", "native"])
def crc_path(request, monkeypatch):
    """Run a test once with each path of crc_many."""
    if request.param == "native":
        mod = crc_many.load_kernel(honour_env=False)
        if mod is None:
            if native_required():
                pytest.fail("the compiled CRC kernel is not built (CI requires it)")
            pytest.skip("the compiled CRC kernel is not built")
        monkeypatch.setattr(crc_many, "KERNEL", mod)
    else:
        monkeypatch.setattr(crc_many, "KERNEL", None)
    return request.param


def test_crc_rows_equal_zlib_on_both_paths(crc_path):
    rng = np.random.default_rng(3)
    for n, length in ((500, 41), (1, 270), (40, 0), (0, 9)):
        rows = rng.integers(0, 256, (n, length), dtype=np.uint8)
        if length > 10:
            rows[:, :10] = 7  # positions where every row agrees
        assert crc_many.crc_rows(rows).tolist() == [zlib.crc32(r.tobytes()) for r in rows]
    # a strided view (a header matrix without its trailing checksum) gives the same answers
    rows = rng.integers(0, 256, (300, 274), dtype=np.uint8)
    view = rows[:, :-4]
    assert crc_many.crc_rows(view).tolist() == [zlib.crc32(r.tobytes()) for r in view]


def test_crc_ranges_equal_zlib_on_both_paths(crc_path):
    rng = np.random.default_rng(5)
    buf = rng.integers(0, 256, 50_000, dtype=np.uint8)
    starts = rng.integers(0, 40_000, 3_000)
    lengths = np.concatenate(([0, 1, 700, 5000], rng.integers(0, 30, 2_996)))
    want = [zlib.crc32(buf[s:s + n].tobytes()) for s, n in zip(starts, lengths)]
    assert crc_many.crc_ranges(buf, starts, lengths).tolist() == want
    assert crc_many.crc_ranges(buf.tobytes(), starts, lengths).tolist() == want


def test_kernel_refuses_a_range_outside_the_buffer_and_writes_nothing():
    mod = crc_many.load_kernel(honour_env=False)
    if mod is None:
        pytest.skip("the compiled CRC kernel is not built")
    buf = np.zeros(100, dtype=np.uint8)
    out = np.full(2, 7, dtype=np.uint32)
    with pytest.raises(ValueError, match="outside the 100-byte buffer"):
        mod.crc_ranges(buf, np.array([0, 90], dtype=np.int64), np.array([5, 11], dtype=np.int64),
                       out)
    assert out.tolist() == [7, 7]
    with pytest.raises(ValueError, match="expected"):
        mod.crc_rows(buf, 3, 40, np.zeros(3, dtype=np.uint32))  # 120 bytes asked, 100 given


def test_copy_ranges_gathers_every_range_on_both_paths(crc_path):
    rng = np.random.default_rng(9)
    src = rng.integers(0, 256, 20_000, dtype=np.uint8)
    lengths = np.concatenate(([0, 1, 3_000], rng.integers(0, 40, 997))).astype(np.int64)
    starts = np.array([rng.integers(0, src.size - n + 1) for n in lengths.tolist()])
    at = np.zeros(lengths.size, dtype=np.int64)
    np.cumsum(lengths[:-1], out=at[1:])
    order = rng.permutation(lengths.size)  # the destination filled out of order
    dst = np.zeros(int(lengths.sum()), dtype=np.uint8)
    crc_many.copy_ranges(src.tobytes(), starts[order], lengths[order], dst, at[order])
    want = b"".join(src[s:s + n].tobytes() for s, n in zip(starts.tolist(), lengths.tolist()))
    assert dst.tobytes() == want


@pytest.mark.parametrize("bad", ["source", "destination"])
def test_copy_ranges_refuses_a_range_outside_either_buffer_and_copies_nothing(crc_path, bad):
    src = np.arange(100, dtype=np.uint8)
    dst = np.full(50, 7, dtype=np.uint8)
    starts = np.array([0, 95 if bad == "source" else 10], dtype=np.int64)
    lengths = np.array([5, 10], dtype=np.int64)
    at = np.array([0, 5 if bad == "source" else 45], dtype=np.int64)
    with pytest.raises(ValueError, match="outside"):
        crc_many.copy_ranges(src, starts, lengths, dst, at)
    if crc_path == "native":  # the kernel checks every range first
        assert dst.tolist() == [7] * 50


def test_gather_rows_equals_the_slices_on_both_paths(crc_path):
    rng = np.random.default_rng(11)
    data = rng.integers(0, 256, 10_000, dtype=np.uint8)
    starts = rng.integers(0, 10_000 - 270, 300)
    rows = crc_many.gather_rows(data, starts, 270)
    assert rows.shape == (300, 270)
    assert all(rows[i].tobytes() == data[s:s + 270].tobytes() for i, s in enumerate(starts))
    assert crc_many.gather_rows(data, starts[:0], 270).shape == (0, 270)
