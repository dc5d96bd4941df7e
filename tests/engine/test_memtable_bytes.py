"""The memtable's cap in bytes (docs/design/realtime.md, "The memtable's cap in bytes"):
`MemTable.nbytes` follows what the memtable really holds whatever the shape of the appends,
a flush starts when it reaches `memtable_bytes` however few events that is, events a partial
seal took stay counted until a flush lets their blocks go, and a full flush encodes in parts
without changing a byte of what it writes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from seqvault import Schema, SeqVault, sealing
from seqvault.memtable import BLOCK_ROWS, MemTable

SCHEMA = Schema.from_dict({
    "user": {"column": "user_id", "type": "int64"},
    "time": {"column": "ts", "unit": "ms"},
    "columns": [{"name": "item_id", "type": "int64"}, {"name": "action", "type": "int8"},
                {"name": "cat", "type": "int32"}],
})
T0 = 1_790_000_000_000


def _cols(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    ts = np.sort(rng.integers(T0, T0 + 10**9, n)).astype(np.int64)
    return ts, {"item_id": rng.integers(0, 10**6, n).astype(np.int64),
                "action": rng.integers(0, 5, n).astype(np.int8),
                "cat": rng.integers(0, 99, n).astype(np.int32)}


def _fill(shape: str, rng: np.random.Generator) -> MemTable:
    m = MemTable()
    if shape == "calls of one event":  # the online append: a chunk per event
        for _ in range(4000):
            m.add_grouped([int(rng.integers(0, 300))], [1], *_cols(rng, 1))
    elif shape == "calls of 20 users":
        for _ in range(400):
            keys = sorted(set(rng.integers(0, 300, 20).tolist()))
            m.add_grouped(keys, [1] * len(keys), *_cols(rng, len(keys)))
    elif shape == "many-user calls":  # a user per event: the per-user bookkeeping dominates
        for _ in range(3):
            keys = (rng.permutation(20_000) + 10**12).tolist()
            m.add_grouped(keys, [1] * len(keys), *_cols(rng, len(keys)))
    elif shape == "big calls, every user read":  # sorted copies double the rows
        for _ in range(100):
            keys = list(range(40))
            m.add_grouped(keys, [50] * 40, *_cols(rng, 2000))
            for key in keys:
                tail = m.get(key)
                assert tail is not None
                tail.sorted_arrays()
    else:  # hot users read after every append: built tails with sorted copies
        for _ in range(2000):
            key = int(rng.integers(0, 50))
            m.add_grouped([key], [1], *_cols(rng, 1))
            tail = m.get(key)
            assert tail is not None
            tail.sorted_arrays()
    return m


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("shape", ["calls of one event", "calls of 20 users", "many-user calls",
                                   "big calls, every user read",
                                   "hot users read between appends"])
def test_the_estimate_covers_what_the_allocator_holds_within_a_factor_of_two(
        monkeypatch, shape, compiled):
    if not compiled:
        monkeypatch.setenv("SEQVAULT_NATIVE", "0")
        from seqvault import prepare
        monkeypatch.setattr(prepare, "KERNEL", None)
    rng = np.random.default_rng(5)
    tracemalloc.start()
    try:
        m = _fill(shape, rng)
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ratio = m.nbytes() / held
    # Never below what Python and numpy allocated for it (the cap would be passed unseen);
    # not far above either (flushes would come much earlier than asked).
    assert 1.0 <= ratio <= 2.0, (shape, m.nbytes(), held)


def test_a_partial_seal_keeps_its_rows_counted_until_a_flush_lets_the_blocks_go(tmp_path):
    rng = np.random.default_rng(6)
    with SeqVault.open(tmp_path / "s", schema=SCHEMA, durability="none", tail_events=8,
                       flush_worker="caller") as v:
        for _ in range(40):
            ts, cols = _cols(rng, 1)
            v.append(7, {"ts": ts, **cols})
        mem = v.mem
        # Every 8th event sealed the tail: few events left, all 40 rows still in blocks.
        assert mem.events < 8
        assert mem.rows == 40
        assert mem.nbytes() >= 40 * mem.row_bytes
        v.flush()
        assert v.mem.rows == 0 and v.mem.nbytes() == 0
        assert len(v.read(7)["ts"]) == 40


def test_a_flush_of_only_sealed_rows_frees_them_and_loses_nothing(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "s"
    want = []
    with SeqVault.open(path, schema=SCHEMA, durability="batch", tail_events=4,
                       flush_worker="caller") as v:
        for _ in range(8):  # two partial seals take all eight events
            ts, cols = _cols(rng, 1)
            want.append(int(ts[0]))
            v.append(3, {"ts": ts, **cols})
        assert v.mem.events == 0 and v.mem.rows == 8
        v.flush()
        assert v.mem.rows == 0
        assert v.read(3)["ts"].tolist() == sorted(want)
    with SeqVault.open(path) as v:  # the log's sealed records skip them on the replay
        assert v.read(3)["ts"].tolist() == sorted(want)
        assert v.stats()["memtable_events"] == 0


@pytest.mark.parametrize("worker", ["thread", "caller"])
def test_a_flush_starts_at_the_byte_cap_long_before_the_event_cap(tmp_path, worker):
    rng = np.random.default_rng(8)
    cap = 1 << 18
    path = tmp_path / "s"
    want: dict[int, list[int]] = {}
    most = 0
    with SeqVault.open(path, schema=SCHEMA, durability="none", memtable_bytes=cap,
                       memtable_events=1 << 30, flush_worker=worker) as v:
        for _ in range(10_000):  # one-event calls: ~90 bytes of memtable each, ~70 of log
            key = int(rng.integers(0, 100))
            ts, cols = _cols(rng, 1)
            want.setdefault(key, []).append(int(ts[0]))
            v.append(key, {"ts": ts, **cols})
            with v.lock:
                held = v.mem.nbytes() + (v.frozen.nbytes() if v.frozen is not None else 0)
            most = max(most, held)
        with v.lock:
            v.wait_flush()
        assert v.stats()["flushes"] >= 3  # 10,000 events, far below memtable_events
        # Two memtables at most (one being flushed), each stopped within a call of the cap;
        # a call may add a block (BLOCK_ROWS rows of room).
        block = BLOCK_ROWS * (v.mem.row_bytes + 8) + MemTable.BLOCK_BYTES
        assert most <= 2 * (cap + block + 4 * 1024)
    with SeqVault.open(path, read_only=True) as r:
        for key, ts in want.items():
            assert r.read(key)["ts"].tolist() == sorted(ts)


def test_a_flush_encoded_in_parts_writes_the_bytes_of_one_encoding(tmp_path, monkeypatch):
    rng = np.random.default_rng(9)
    calls = []
    for day in range(3):  # later calls fold into earlier users' segments, some late
        users = rng.permutation(900)[:700].astype(np.int64) * 13
        ts = T0 + day * 3_600_000 + rng.integers(-7_200_000, 3_600_000, users.size)
        calls.append({"user_id": users, "ts": ts,
                      "item_id": rng.integers(0, 10**6, users.size),
                      "action": rng.integers(0, 5, users.size).astype(np.int8),
                      "cat": rng.integers(0, 99, users.size).astype(np.int32)})

    def load(path):
        with SeqVault.open(path, schema=SCHEMA, durability="none") as v:
            for c in calls:
                v.append_batch(c)
                v.flush()
        return path

    whole = load(tmp_path / "whole")
    monkeypatch.setattr(sealing, "ENCODE_PIECES", 37)
    parts = load(tmp_path / "parts")
    names = sorted(p.name for p in (whole / "data").iterdir())
    assert names == sorted(p.name for p in (parts / "data").iterdir())
    for name in names:
        assert (whole / "data" / name).read_bytes() == (parts / "data" / name).read_bytes()
    with SeqVault.open(parts, read_only=True) as r:
        assert r.stats()["events"] == sum(c["ts"].size for c in calls)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_tail_counts_equal_a_recount_after_any_appends_reads_and_seals(
        monkeypatch, seed, compiled):
    """`tail_rows` and `tail_refs` are kept up to date by every path that builds, grows or
    cuts a tail; a recount over the built tails must find the same numbers. `over(cap)`
    answers as `nbytes() >= cap` after every step."""
    if not compiled:
        from seqvault import prepare
        monkeypatch.setattr(prepare, "KERNEL", None)
    rng = np.random.default_rng(seed)
    m = MemTable()
    end = 0
    cap, crossed = 400_000, False
    for _ in range(600):
        op = rng.random()
        if op < 0.6:  # an append of a few users (or many: the numpy path without the kernel)
            n_users = int(rng.choice([1, 3, 60]))
            keys = sorted(set(rng.integers(0, 80, n_users).tolist()))
            counts = rng.integers(1, 4, len(keys)).tolist()
            end += 100
            m.add_grouped(keys, counts, *_cols(rng, int(sum(counts))), end=end)
        elif op < 0.85:  # a read builds the tail
            key = int(rng.integers(0, 80))
            tail = m.get(key)
            if tail is not None:
                tail.sorted_arrays()
        else:  # a partial seal through some earlier record
            key = int(rng.integers(0, 80))
            m.drop_through(key, int(rng.integers(0, end + 1)))
        assert m.tail_rows == sum(t.count for t in m.tails.values())
        assert m.tail_refs == sum(len(t.refs) for t in m.tails.values())
        # `over` skips the estimate only while no append or read can have reached the cap
        assert m.over(cap) == (m.nbytes() >= cap)
        crossed |= m.nbytes() >= cap
    assert crossed, "the cap was never reached: the test did not test `over`"
    assert m.rows * m.row_bytes <= m.nbytes()
