"""Tests named after the clauses of docs/format/segment.md."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seqvault import CorruptionError, FormatVersionError, SeqVault
from seqvault.encoding import (
    ENC_BITPACK,
    ENC_CONST,
    ENC_DELTA,
    ENC_FOR,
    FLAG_SHUFFLE,
    FLAG_ZSTD,
    decode_column,
    encode_column,
)
from seqvault.segment import (
    FIXED_SIZE,
    decode_columns,
    decode_segment,
    encode_segment,
    header_size,
    parse_header,
    read_key,
    verify_segment,
)


def seg(ts, cols=(), key=42):
    return encode_segment(key, 1, np.asarray(ts, dtype=np.int64), cols)


def test_worked_example_is_117_bytes(decoder):
    buf = seg([1000, 1000, 1005], [(1, "int64", np.array([7, 9, 7]), None)])
    assert len(buf) == 117
    h = parse_header(buf)
    assert h.size == 112 and h.count == 3 and (h.min_ts, h.max_ts) == (1000, 1005)
    assert h.columns[0].encoding == ENC_DELTA and h.columns[0].param == 1000
    assert buf[112:114] == b"\x00\x0a"
    assert h.columns[1].encoding == ENC_FOR and buf[114:117] == b"\x00\x02\x00"
    info, cols = decode_segment(buf, [0, 1])
    assert info == (b"\x2a" + bytes(7), 3, 1000, 1005)
    assert cols[0].tolist() == [1000, 1000, 1005] and cols[1].tolist() == [7, 9, 7]


def test_I1_header_checksum_mismatch_is_corruption(decoder):
    buf = bytearray(seg([1, 2, 3], [(1, "int64", np.array([1, 2, 3]), None)]))
    buf[FIXED_SIZE + 2] ^= 0xFF  # inside the key
    with pytest.raises(CorruptionError, match="header checksum"):
        parse_header(bytes(buf))
    with pytest.raises(CorruptionError, match="^segment: header checksum mismatch$"):
        decode_segment(bytes(buf), [0, 1])


@pytest.mark.parametrize("key", [42, -7, "user-ü"])
def test_read_key_checks_the_header_alone(key):
    """Listing users reads only a segment's header: the key it gives is the one parse_header
    gives, and every header byte is still covered by the header checksum (I1)."""
    buf = seg([1, 2, 3], [(1, "int64", np.array([1, 2, 3]), None)], key=key)
    size = header_size(buf[:FIXED_SIZE])
    assert size == parse_header(buf).size
    h = parse_header(buf)
    assert read_key(buf[:size]) == (h.key_type, h.key)
    for i in range(size):
        bad = bytearray(buf[:size])
        bad[i] ^= 0x01
        with pytest.raises((CorruptionError, FormatVersionError)):
            read_key(bytes(bad))
    with pytest.raises(CorruptionError, match="header needs"):
        read_key(buf[:size - 1])


def test_I1_bad_magic(decoder):
    buf = bytearray(seg([1]))
    buf[0:4] = b"XXXX"
    with pytest.raises(CorruptionError, match="magic"):
        parse_header(bytes(buf))
    with pytest.raises(CorruptionError, match="bad magic b'XXXX'"):
        decode_segment(bytes(buf), [0])


def test_I2_truncated_extent_is_corruption(decoder):
    buf = seg(np.arange(1000) * 7, [(1, "int64", np.arange(1000) ** 2, None)])
    with pytest.raises(CorruptionError, match="column lengths|shorter"):
        parse_header(buf[:-1])
    with pytest.raises(CorruptionError):
        parse_header(buf[:20])
    with pytest.raises(CorruptionError, match="column lengths add up to"):
        decode_segment(buf[:-1], [0, 1])
    with pytest.raises(CorruptionError, match="shorter than a segment header"):
        decode_segment(buf[:20], [0, 1])


def test_I3_unsorted_timestamps_are_refused_on_write():
    with pytest.raises(ValueError, match="sorted"):
        seg([3, 1, 2])


def test_I4_column_checksum_mismatch_is_corruption_and_only_asked_columns_are_checked(decoder):
    a = np.arange(500, dtype=np.int64) * 3
    b = np.arange(500, dtype=np.int64) % 7
    buf = bytearray(seg(np.arange(500), [(1, "int64", a, None), (2, "int64", b, None)]))
    h = parse_header(bytes(buf))
    buf[h.columns[2].offset] ^= 0x01
    decoded = decode_columns(bytes(buf), h, [1])  # column 2 not asked for: not decompressed
    assert np.array_equal(decoded[1], a)
    with pytest.raises(CorruptionError, match="column 2"):
        decode_columns(bytes(buf), h, [2])
    with pytest.raises(CorruptionError):
        verify_segment(bytes(buf))
    assert np.array_equal(decode_segment(bytes(buf), [0, 1])[1][1], a)
    with pytest.raises(CorruptionError, match="^segment: checksum mismatch in column 2$"):
        decode_segment(bytes(buf), [0, 1, 2])


def test_I5_missing_column_is_left_out(decoder):
    buf = seg([1, 2], [(1, "int8", np.array([1, 2], dtype=np.int8), None)])
    assert set(decode_columns(buf, parse_header(buf), [0, 1, 99])) == {0, 1}
    info, cols = decode_segment(buf, [0, 1, 99])
    assert set(cols) == {0, 1} and cols[1].tolist() == [1, 2] and info.events == 2


def test_version_newer_is_refused(decoder):
    buf = bytearray(seg([1]))
    struct.pack_into("<H", buf, 4, 2)
    with pytest.raises(FormatVersionError, match="newer"):
        parse_header(bytes(buf))
    with pytest.raises(FormatVersionError, match="newer"):
        decode_segment(bytes(buf), [0])


def test_encodings_chosen():
    assert encode_column(np.full(100, 5, dtype=np.int32)).encoding == ENC_CONST
    assert encode_column(np.ones(100, dtype=bool)).encoding == ENC_BITPACK
    e = encode_column(np.arange(10_000, dtype=np.int64) + (1 << 40))
    assert e.encoding == ENC_FOR and e.width == 2 and e.flags & FLAG_SHUFFLE and e.flags & FLAG_ZSTD


INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(INT_DTYPES).flatmap(lambda dt: hnp.arrays(dt, st.integers(0, 300))),
       st.booleans())
def test_integer_columns_round_trip(arr, delta):
    if delta:
        arr = np.sort(arr.astype(np.int64))
    enc = encode_column(arr, delta=delta)
    out = decode_column(enc, enc.data, arr.size, arr.dtype)
    assert out.dtype == arr.dtype and np.array_equal(out, arr)


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.float64]), st.integers(0, 300),
                  elements=st.floats(allow_nan=True, width=32)))
def test_float_columns_round_trip_bit_exact(arr):
    enc = encode_column(arr)
    out = decode_column(enc, enc.data, arr.size, arr.dtype)
    assert out.tobytes() == arr.tobytes()


def test_flipped_byte_in_sealed_segment_raises_on_read(tmp_path, schema, decoder):
    rng = np.random.default_rng(0)
    from ..conftest import make_events

    with SeqVault.open(tmp_path / "s", schema=schema) as v:
        v.append(1, make_events(rng, 2000))
        v.append(2, make_events(rng, 10))
    path = next((tmp_path / "s" / "data").glob("rt-*.svx"))
    with SeqVault.open(tmp_path / "s") as v:
        ext = v.index.extents_of(__import__("seqvault.index", fromlist=["x"]).user_hash(
            (1).to_bytes(8, "little", signed=True)))[0]
        h = parse_header(v.files.pread(ext.file, ext.off, ext.length))
    raw = bytearray(path.read_bytes())
    pos = ext.off + h.columns[1].offset + 5  # inside item_id's payload
    raw[pos] ^= 0x40
    path.write_bytes(bytes(raw))
    with SeqVault.open(tmp_path / "s") as v:
        with pytest.raises(CorruptionError) as info:
            v.read(1)
        assert info.value.user == 1 and str(path) == info.value.path
        assert v.read(1, columns=["ts", "action"]).count == 2000  # other columns still verified
        assert v.read(2).count == 10  # other users unaffected
