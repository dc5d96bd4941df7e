"""The ingest fast path encodes many users at once; every segment it makes must be byte-for-byte
the segment `encode_segment` makes for that user alone (docs/format/segment.md)."""

from __future__ import annotations

import numpy as np
import pytest

from seqvault import segment_batch as fastpath
from seqvault.segment import KEY_INT64, KEY_STRING, encode_segment, key_bytes, verify_segment


@pytest.fixture(autouse=True, params=["kernel", "numpy"])
def scatter_path(request, monkeypatch):
    """Every test here twice: the byte-plane scatter in C (native_append.scatter) and in numpy."""
    if request.param == "numpy":
        monkeypatch.setattr(fastpath, "KERNEL", None)
    elif fastpath.KERNEL is None:
        pytest.skip("the append kernel is not built here")
    return request.param


def _users(rng: np.random.Generator, n_users: int) -> tuple[list, np.ndarray, np.ndarray]:
    counts = np.concatenate(([1, 1, 2, 3, 64, 200], rng.integers(1, 300, size=n_users - 6)))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return list(range(len(counts))), starts, counts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_segments_equal_encode_segment(seed):
    rng = np.random.default_rng(seed)
    keys, starts, counts = _users(rng, 400)
    n = int(counts.sum())
    ts_parts, cols = [], {"item": [], "cat": [], "dwell": [], "code": [], "neg": []}
    for i, c in enumerate(counts.tolist()):
        kind = i % 5
        if kind == 0:  # all timestamps equal (CONST), constant columns
            ts = np.full(c, 1_700_000_000_000 + i, dtype=np.int64)
        elif kind == 1:  # bursts of ties
            ts = np.sort(1_700_000_000_000 + rng.integers(0, 5, size=c) * 1000)
        else:  # wide spread: 8-byte deltas sometimes
            ts = np.sort(rng.integers(0, 1 << 62, size=c)) if kind == 4 else np.sort(
                1_700_000_000_000 + rng.integers(0, 10**9, size=c))
        ts_parts.append(ts.astype(np.int64))
        const = kind == 0
        cols["item"].append(np.full(c, 7, np.int64) if const else
                            rng.integers(-(1 << 62), 1 << 62, size=c, dtype=np.int64) if kind == 4
                            else rng.integers(0, 5_000_000, size=c, dtype=np.int64))
        cols["cat"].append(np.full(c, 3, np.uint16) if const else
                           rng.integers(0, 1 << 16, size=c, dtype=np.uint16))
        cols["dwell"].append(rng.integers(0, 1 << 32, size=c, dtype=np.uint64).astype(np.uint32))
        cols["code"].append(rng.integers(0, 3, size=c).astype(np.uint32))
        cols["neg"].append(rng.integers(-100, 100, size=c).astype(np.int8))
    ts = np.concatenate(ts_parts)
    spec = [(1, "int64", np.concatenate(cols["item"]), 3),
            (2, "uint16", np.concatenate(cols["cat"]), 3),
            (3, "uint32", np.concatenate(cols["dwell"]), 1),
            (4, "string", np.concatenate(cols["code"]), 3),
            (5, "int8", np.concatenate(cols["neg"]), 3)]
    assert ts.size == n
    kbytes = [key_bytes(k)[1] for k in keys]
    out = list(fastpath.encode_users(keys, KEY_INT64, kbytes, 4, ts, spec, starts, counts))
    assert len(out) == len(keys)
    for (key, blob, count, mn, mx), s, c in zip(out, starts.tolist(), counts.tolist()):
        lo, hi = s, s + c
        expected = encode_segment(key, 4, ts[lo:hi],
                                  [(cid, t, v[lo:hi], lvl) for cid, t, v, lvl in spec])
        assert blob == expected, key
        header = verify_segment(blob)
        assert (header.count, header.min_ts, header.max_ts) == (count, mn, mx) == (
            c, int(ts[lo]), int(ts[hi - 1]))


def test_fast_path_string_keys():
    keys = ["alice", "bob", "ünïcode"]
    counts = np.array([3, 1, 100])
    starts = np.array([0, 3, 4])
    ts = np.concatenate([[5, 5, 9], [1], np.arange(100) * 7]).astype(np.int64)
    vals = np.arange(104, dtype=np.int64) % 3
    spec = [(1, "int64", vals, 3)]
    out = list(fastpath.encode_users(keys, KEY_STRING, [k.encode() for k in keys], 1, ts, spec,
                                     starts, counts))
    for (key, blob, *_), s, c in zip(out, starts, counts):
        assert blob == encode_segment(key, 1, ts[s:s + c], [(1, "int64", vals[s:s + c], 3)])


def _probe_columns(rng: np.random.Generator, counts: np.ndarray) -> tuple[np.ndarray, list]:
    """Per user: sorted timestamps, Zipf-repeated item ids (unshuffled compresses smaller) and
    small smooth dwell times (shuffled compresses smaller)."""
    ts, items, dwell = [], [], []
    for c in counts.tolist():
        ts.append(np.sort(1_700_000_000_000 + rng.integers(0, 10**8, size=c)))
        pool = rng.integers(10**6, 10**9, size=40)
        items.append(pool[np.minimum(rng.zipf(1.3, size=c), 40) - 1])
        dwell.append(rng.integers(0, 3000, size=c).astype(np.uint32))
    spec = [(1, "int64", np.concatenate(items).astype(np.int64), 3),
            (2, "uint32", np.concatenate(dwell), 3)]
    return np.concatenate(ts).astype(np.int64), spec


def test_shuffle_probe_both_outcomes_and_long_users_equal_encode_segment():
    """The shuffle probe compresses a column both ways; up to SHUFFLE_PROBE values the probe
    is the whole column and its zstd bytes are kept (encode_column and the batch encoder
    both). Users on both sides of that bound, and columns where each choice wins, must still
    give encode_segment's bytes, and each choice must really occur."""
    from seqvault.encoding import FLAG_SHUFFLE, FLAG_ZSTD, SHUFFLE_PROBE
    from seqvault.segment import decode_columns, parse_header

    rng = np.random.default_rng(11)
    counts = np.array([64, 65, 300, SHUFFLE_PROBE - 1, SHUFFLE_PROBE, SHUFFLE_PROBE + 1,
                       SHUFFLE_PROBE + 2, 9_000, 70, 2_048])
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    ts, spec = _probe_columns(rng, counts)
    keys = list(range(counts.size))
    kbytes = [key_bytes(k)[1] for k in keys]
    out = list(fastpath.encode_users(keys, KEY_INT64, kbytes, 4, ts, spec, starts, counts))
    seen = {1: set(), 2: set()}
    for (key, blob, *_), s, c in zip(out, starts.tolist(), counts.tolist()):
        expected = encode_segment(key, 4, ts[s:s + c],
                                  [(cid, t, v[s:s + c], lvl) for cid, t, v, lvl in spec])
        assert blob == expected, (key, c)
        header = parse_header(blob)
        got = decode_columns(blob, header, [1, 2])
        for cid, _t, v, _lvl in spec:  # and the bytes decode to the values
            assert np.array_equal(got[cid], v[s:s + c]), (key, cid)
        for cid in (1, 2):
            flags = header.columns[cid].flags
            assert flags & FLAG_ZSTD or c < 300, (key, cid)
            seen[cid].add(bool(flags & FLAG_SHUFFLE))
    assert False in seen[1] and True in seen[2], seen
