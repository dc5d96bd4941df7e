"""Segment encode/decode of 10,000 events, beside what the RocksDB layouts pay for the same.

Groups put SeqVault's codec next to the baselines' deserialisation (msgpack rows for the blob
layout, packed records for the key-per-event layout), so one ``--benchmark-only`` run shows the
per-read decode floor of each design.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from bench import workload as wl

segment = pytest.importorskip("seqvault.segment")


def _columns(schema, cols):
    return [(c.id, c.type, cols[c.name], c.level) for c in schema.columns]


@pytest.fixture(scope="module")
def encoded(schema, history):
    return segment.encode_segment(4242, 1, history["ts"], _columns(schema, history))


@pytest.mark.benchmark(group="encode 10k events")
def test_seqvault_encode_segment(benchmark, schema, history):
    out = benchmark(segment.encode_segment, 4242, 1, history["ts"], _columns(schema, history))
    assert len(out) > 0


@pytest.mark.benchmark(group="encode 10k events")
def test_rocks_blob_msgpack_pack(benchmark, history):
    rows = np.column_stack([history[c].astype(np.int64) for c in wl.EVENT_COLUMNS]).tolist()
    benchmark(msgpack.packb, rows)


@pytest.mark.benchmark(group="decode 10k events, all columns")
def test_seqvault_decode_segment(benchmark, schema, encoded):
    ids = [segment.TIME_COLUMN_ID] + [c.id for c in schema.columns]

    def decode():
        header = segment.parse_header(encoded)
        return segment.decode_columns(encoded, header, ids)

    out = benchmark(decode)
    assert len(out[segment.TIME_COLUMN_ID]) == 10_000


@pytest.mark.benchmark(group="decode 10k events, all columns")
def test_seqvault_decode_segment_one_call(benchmark, schema, encoded):
    # What reads call: the compiled decoder when it is built (seqvault.native_available()),
    # else the Python one above; the name records which ran.
    import seqvault

    ids = [segment.TIME_COLUMN_ID] + [c.id for c in schema.columns]
    benchmark.extra_info["decoder"] = "native" if seqvault.native_available() else "python"
    info, cols = benchmark(segment.decode_segment, encoded, ids)
    assert info.events == 10_000 and len(cols[segment.TIME_COLUMN_ID]) == 10_000


@pytest.mark.benchmark(group="decode 10k events, all columns")
def test_rocks_blob_msgpack_unpack_to_numpy(benchmark, history):
    rows = np.column_stack([history[c].astype(np.int64) for c in wl.EVENT_COLUMNS]).tolist()
    blob = msgpack.packb(rows)

    def decode():
        return np.array(msgpack.unpackb(blob, use_list=False), dtype=np.int64)

    assert benchmark(decode).shape == (10_000, len(wl.EVENT_COLUMNS))


@pytest.mark.benchmark(group="decode 10k events, ts + item_id")
def test_seqvault_decode_two_columns(benchmark, schema, encoded):
    ids = [segment.TIME_COLUMN_ID, schema.column("item_id").id]

    def decode():
        header = segment.parse_header(encoded)
        return segment.decode_columns(encoded, header, ids)

    assert len(benchmark(decode)) == 2


@pytest.mark.benchmark(group="encoded size")
def test_seqvault_bytes_per_event(benchmark, encoded):
    # Not a timing: records the encoded size in the benchmark's extra_info for comparisons.
    benchmark.extra_info["bytes_per_event"] = len(encoded) / 10_000
    benchmark(len, encoded)


@pytest.mark.benchmark(group="decode 10k events, all columns")
def test_rocks_event_join_and_frombuffer(benchmark, history):
    # What the key-per-event layout does after its scan: 10,000 (key, value) byte strings
    # joined and viewed as records (the scan itself is measured by bench.run).
    from bench.rocks_baselines import RocksEventStore

    store = RocksEventStore.__new__(RocksEventStore)
    store.seq = 0
    users = np.full(10_000, 4242, dtype=np.int64)
    kb, vb, n = store._encode(users, history)
    keys = [kb[i * 24 : (i + 1) * 24] for i in range(n)]
    values = [vb[i * 18 : (i + 1) * 18] for i in range(n)]

    def decode():
        k = np.frombuffer(b"".join(keys), dtype=[("u", ">u8"), ("t", ">u8"), ("s", ">u8")])
        v = np.frombuffer(b"".join(values), dtype=np.dtype(
            [("item_id", "<i8"), ("action", "i1"), ("category", "<i4"), ("dwell_ms", "<i4"),
             ("scenario", "i1")]))
        return k["t"], {c: v[c].copy() for c in v.dtype.names}

    benchmark(decode)
