"""The compiled append kernel (seqvault/native_append.c through seqvault/prepare.py) against
the Python reference path: it accepts only what the reference accepts, returns the same
keys, counts and arrays, and the record payload byte for byte (so logs written by either
replay alike); what it does not take (anything unusual, every invalid call) it hands back to
Python, which names the problem. The memtable insert (`add_call`) and the tail gather
(`gather`) leave the memtable exactly as the Python loops do."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqvault import Schema, SeqVault, prepare, sample
from seqvault import wal as walmod
from seqvault.errors import ValidationError
from seqvault.memtable import BLOCK_ROWS, Block, MemTable
from seqvault.validate import validate_append, validate_batch
from tests.conftest import SCHEMA_DICT, native_required

KERNEL = prepare.load(honour_env=False)
pytestmark = pytest.mark.skipif(KERNEL is None and not native_required(),
                                reason="the compiled append kernel is not built")

NUMERIC = Schema.from_dict({
    "user": {"column": "user_id", "type": "int64"},
    "time": {"column": "ts", "unit": "ms"},
    "columns": [{"name": n, "type": t, "default": d} for n, t, d in [
        ("i8", "int8", 0), ("i16", "int16", 0), ("i32", "int32", 0), ("i64", "int64", 0),
        ("u8", "uint8", 0), ("u16", "uint16", 0), ("u32", "uint32", 0), ("u64", "uint64", 0),
        ("f32", "float32", 0.0), ("f64", "float64", 0.0), ("flag", "bool", False),
        ("tag", "string", "")]],
})
MIXED = Schema.from_dict(SCHEMA_DICT)  # the engine tests' schema: a string, float32 and bool
NOW_MS = int(time.time() * 1000)
INT_TYPES = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64, "u8": np.uint8,
             "u16": np.uint16, "u32": np.uint32, "u64": np.uint64}


def reference_one(schema: Schema, key: Any, events: dict) -> tuple:
    ts, cols = validate_append(schema, events)
    payload = walmod.encode_append(schema, [key], [int(ts.size)], ts, cols)
    return [key], [int(ts.size)], ts, cols, payload


def reference_batch(schema: Schema, data: dict) -> tuple:
    keys, counts, ts, cols = validate_batch(schema, data)
    return keys, counts, ts, cols, walmod.encode_append(schema, keys, counts, ts, cols)


def assert_same(got: tuple | None, want: tuple) -> None:
    assert got is not None
    assert got[0] == want[0] and [type(k) for k in got[0]] == [type(k) for k in want[0]]
    assert got[1] == want[1]
    assert got[2].dtype == np.int64 and np.array_equal(got[2], want[2])
    assert list(got[3]) == list(want[3])
    for name, arr in want[3].items():
        assert got[3][name].dtype == arr.dtype, name
        assert got[3][name].tolist() == arr.tolist(), name
    assert got[4] == want[4]  # the log record's payload, byte for byte


def numeric_events(rng: np.random.Generator, n: int, as_lists: bool) -> dict:
    cols: dict[str, Any] = {"ts": NOW_MS - rng.integers(0, 10**6, n)}
    for name, t in INT_TYPES.items():
        info = np.iinfo(t)
        cols[name] = rng.integers(info.min, info.max, n, dtype=t, endpoint=True)
    cols["f32"] = rng.standard_normal(n).astype(np.float32)
    cols["f64"] = rng.standard_normal(n)
    cols["flag"] = rng.random(n) < 0.5
    cols["tag"] = np.array([["", "a", "é" * 40, "x" * 300][i] for i in rng.integers(0, 4, n)],
                           dtype=object)
    if as_lists:
        for name in ("ts", *INT_TYPES, "tag"):
            cols[name] = cols[name].tolist()
    return cols


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 300), st.booleans(), st.integers(0, 2**32),
       st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.text(max_size=300)))
def test_kernel_matches_the_reference_for_one_user(n, as_lists, seed, key):
    rng = np.random.default_rng(seed)
    events = numeric_events(rng, n, as_lists)
    got = KERNEL.prepare(*_args(NUMERIC, key, None, events))
    assert_same(got, reference_one(NUMERIC, key, events))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 1024), st.integers(1, 50), st.booleans(), st.integers(0, 2**32))
def test_kernel_matches_the_reference_for_a_batch(n, n_users, as_lists, seed):
    """Users unsorted and repeated: grouped by a stable sort, as validate_batch groups."""
    rng = np.random.default_rng(seed)
    data = numeric_events(rng, n, as_lists)
    pool = rng.integers(-(1 << 63), (1 << 63) - 1, n_users, dtype=np.int64, endpoint=True)
    data["user_id"] = pool[rng.integers(0, n_users, n)]
    if as_lists:
        data["user_id"] = data["user_id"].tolist()
    got = KERNEL.prepare(*_args(NUMERIC, None, data["user_id"], data))
    assert_same(got, reference_batch(NUMERIC, data))


def test_the_engine_schema_and_every_integer_form_of_msgpack():
    """Keys and counts at each msgpack integer boundary; a schema version above 1."""
    edges = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, -1, -32,
             -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]
    rng = np.random.default_rng(7)
    evolved = MIXED.evolve_to(Schema.from_dict({**SCHEMA_DICT, "columns": SCHEMA_DICT["columns"] + [
        {"name": "extra", "type": "int16", "default": 0}]}))
    for schema in (MIXED, evolved):
        for key in edges:
            events = _mixed(rng, 3, schema)
            assert_same(KERNEL.prepare(*_args(schema, key, None, events)),
                        reference_one(schema, key, events))


def test_a_map16_of_columns_and_bin16_arrays():
    cols = [{"name": f"c{i}", "type": "int64", "default": 0} for i in range(20)]
    schema = Schema.from_dict({"user": {"column": "u", "type": "int64"},
                               "time": {"column": "ts", "unit": "ms"}, "columns": cols})
    events = {"ts": np.full(40, NOW_MS, np.int64), **{c["name"]: np.arange(40) for c in cols}}
    assert_same(KERNEL.prepare(*_args(schema, 5, None, events)), reference_one(schema, 5, events))


def _mixed(rng: np.random.Generator, n: int, schema: Schema = MIXED) -> dict:
    events = {"ts": (NOW_MS - rng.integers(0, 1000, n)).tolist(),
              "item_id": rng.integers(0, 1 << 40, n).tolist(),
              "action": ["view", "click"] * (n // 2) + ["like"] * (n % 2),
              "dwell": rng.integers(0, 1000, n).astype(np.uint32),
              "score": rng.random(n).astype(np.float32), "liked": rng.random(n) < 0.3}
    if "extra" in schema.column_names:
        events["extra"] = [1] * n
    return events


def _args(schema: Schema, key: Any, users: Any, columns: dict) -> tuple:
    spec, floor = prepare._spec(schema)
    return spec, key, users, columns, floor


def _plain(n: int = 3) -> dict:
    return {"ts": [NOW_MS] * n, "item_id": [1] * n, "action": ["view"] * n,
            "dwell": np.ones(n, np.uint32), "score": np.zeros(n, np.float32),
            "liked": np.zeros(n, bool)}


UNPLAIN = {
    "empty": lambda e: {k: v[:0] for k, v in e.items()},
    "ragged": lambda e: {**e, "item_id": [1, 2]},
    "missing column": lambda e: {k: v for k, v in e.items() if k != "liked"},
    "unknown column": lambda e: {**e, "other": [1, 2, 3]},
    "int out of range": lambda e: {**e, "item_id": [1, 1 << 63, 2]},
    "bool in an int list": lambda e: {**e, "item_id": [1, True, 2]},
    "float in an int list": lambda e: {**e, "item_id": [1, 2.0, 3]},
    "None in an int list": lambda e: {**e, "item_id": [1, None, 3]},
    "wrong dtype": lambda e: {**e, "dwell": np.ones(3, np.int64)},
    "2-D array": lambda e: {**e, "dwell": np.ones((3, 1), np.uint32)},
    "byte-swapped array": lambda e: {**e, "dwell": np.ones(3, ">u4")},
    "a tuple": lambda e: {**e, "item_id": (1, 2, 3)},
    "NaN refused": lambda e: {**e, "score": np.array([0, np.nan, 1], np.float32)},
    "negative time": lambda e: {**e, "ts": [NOW_MS, -1, NOW_MS]},
    "seconds in a ms column": lambda e: {**e, "ts": [NOW_MS // 1000] * 3},
    "a small time (1970)": lambda e: {**e, "ts": [5, 6, 7]},
    "time past max_ts": lambda e: {**e, "ts": [MIXED.max_ts + 1] * 3},
    "None in a string list": lambda e: {**e, "action": ["view", None, "x"]},
    "int in a string list": lambda e: {**e, "action": ["view", 3, "x"]},
    "a lone surrogate": lambda e: {**e, "action": ["view", "\ud800", "x"]},
    "unicode array": lambda e: {**e, "action": np.array(["a", "b", "c"])},
    "too many rows": lambda e: {k: (v * 400 if isinstance(v, list) else np.tile(v, 400))
                                for k, v in e.items()},
}


@pytest.mark.parametrize("case", sorted(UNPLAIN))
def test_anything_unusual_goes_to_the_python_path(case):
    """None from the kernel, and then the reference path's own answer (accepted or a
    ValidationError naming the problem) is what the store gives."""
    events = UNPLAIN[case](_plain())
    assert KERNEL.prepare(*_args(MIXED, 1, None, events)) is None
    try:
        validate_append(MIXED, events)
    except ValidationError:
        pass  # the reference names the problem; the kernel must not have accepted it


def test_retention_leaves_old_events_to_python(monkeypatch):
    monkeypatch.setattr(prepare, "KERNEL", KERNEL)
    schema = sample.behavior_schema()  # with retention
    events = {"ts": [NOW_MS], "item_id": [1], "action": ["click"], "category": [3],
              "dwell_ms": [100], "scenario": ["feed"]}
    assert_same(prepare.prepare(schema, 1, None, events), reference_one(schema, 1, events))
    old = {**events, "ts": [NOW_MS - int(schema.retention.max_age * 1000) - 60_000]}
    assert prepare.prepare(schema, 1, None, old) is None
    with pytest.raises(ValidationError, match="retention"):
        validate_append(schema, old)


def test_the_kernel_copies_the_callers_arrays():
    events = {k: (np.array(v) if isinstance(v, list) and k != "action" else v)
              for k, v in _plain().items()}
    got = KERNEL.prepare(*_args(MIXED, 1, None, events))
    assert got is not None
    for name, arr in got[3].items():
        assert not np.shares_memory(arr, events[name]) or arr.dtype == object, name
    assert not np.shares_memory(got[2], events["ts"])


# ------------------------------------------------------------------ memtable insert
def _state(mem: MemTable) -> tuple:
    index = {id(b): i for i, b in enumerate(mem.blocks)}
    tails = {uid: ([(index[id(b)], s, e) for b, s, e in t.refs], t.count)
             for uid, t in mem.tails.items()}
    blocks = [(id(b), b.fill, b.ts[:b.fill].tolist(), b.ends[:b.fill].tolist(),
               {k: v[:b.fill].tolist() for k, v in b.cols.items()}) for b in mem.blocks]
    nu, ne = len(mem.keys), mem.entries  # the arrays' room past these is not state
    return (dict(mem.users), list(mem.keys), mem.max_tail, mem.events, list(mem._count[:nu]),
            list(mem._last[:nu]), list(mem._e_block[:ne]), list(mem._e_start[:ne]),
            list(mem._e_stop[:ne]), list(mem._e_prev[:ne]), list(mem._e_end[:ne]),
            list(mem._e_uid[:ne]), tails, mem.tail_rows, mem.tail_refs, mem.block_bytes,
            [b[1:] for b in blocks])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 120))
def test_add_call_leaves_the_memtable_as_the_python_loop_does(seed, width):
    """The same calls (small ones sharing blocks, large ones keeping their own arrays, reads
    building tails that later calls extend) through the compiled `add_call` and through the
    Python paths leave equal memtables: users, entries, chains, record ends, block rows."""
    rng = np.random.default_rng(seed)
    mems = {"native": MemTable(), "python": MemTable()}
    for step in range(30):
        k = int(rng.integers(1, width + 1))
        keys = sorted(set(rng.integers(0, 3 * width, k).tolist()))
        big = step % 11 == 5  # a call large enough for a block of its own
        counts = rng.integers(1, 5, len(keys)).tolist() if not big else [
            BLOCK_ROWS // (4 * len(keys)) + 1] * len(keys)
        n = sum(counts)
        for name, mem in mems.items():
            ts = np.arange(n, dtype=np.int64) + 1000 * step
            cols = {"x": (np.arange(n) % 7).astype(np.int16)}
            old, prepare.KERNEL = prepare.KERNEL, (KERNEL if name == "native" else None)
            try:
                full = mem.add_grouped(keys, counts, ts, cols, end=10 * (step + 1), seal_at=6)
            finally:
                prepare.KERNEL = old
            if name == "native":
                full_native = full
            else:
                full_python = full
            if step % 7 == 3:  # build some tails (as a read would): later adds extend them
                mem.get(keys[0])
        assert full_native == full_python
        assert _state(mems["native"]) == _state(mems["python"])


def test_gather_concatenates_a_tails_slices():
    rng = np.random.default_rng(3)
    chunks = [Block(rng.integers(0, 100, 9), {"a": rng.integers(0, 9, 9).astype(np.int8),
                                              "b": rng.random(9)}, np.zeros(9, np.int64), 9)
              for _ in range(50)]
    refs = [(c, int(s), int(s) + int(n)) for c in chunks
            for s, n in [(rng.integers(0, 5), rng.integers(0, 5))]]
    ts, cols = KERNEL.gather(refs, ("a", "b"))
    assert ts.tolist() == np.concatenate([c.ts[s:e] for c, s, e in refs]).tolist()
    for name in ("a", "b"):
        want = np.concatenate([c.cols[name][s:e] for c, s, e in refs])
        assert cols[name].dtype == want.dtype and cols[name].tolist() == want.tolist()
    odd = Block(chunks[0].ts, {"a": chunks[0].cols["a"].astype(np.int64),
                               "b": chunks[0].cols["b"]}, chunks[0].ends, 9)
    assert KERNEL.gather(refs + [(odd, 0, 2)], ("a", "b")) is None  # a dtype changed: Python


def test_chain_walks_a_users_entries_and_stops_at_the_sealed_entry():
    """`chain` (MemTable._build in C): the user's slices oldest first, none from an entry whose
    record ends (`e_end`) at or below `through`; an empty chain is []; a chain that loops (a
    corrupt `e_prev`) or points outside the arrays raises instead of hanging or reading out of
    bounds."""
    from array import array

    blocks = [Block(np.arange(4), {}, np.full(4, 10 * (i + 1)), 4) for i in range(3)]
    # entries 0..3: user A's slices in blocks 0, 1, 2 (entries 0, 2, 3); entry 1 is another's
    e_block, e_start = array("q", [0, 0, 1, 2]), array("q", [0, 2, 1, 0])
    e_stop, e_prev = array("q", [2, 4, 3, 4]), array("q", [-1, -1, 0, 2])
    e_end = array("q", [10, 10, 20, 30])
    refs = KERNEL.chain(blocks, e_block, e_start, e_stop, e_prev, e_end, 3, -1)
    assert [(b is blocks[i], s, e) for (b, s, e), i in zip(refs, (0, 1, 2))] == [
        (True, 0, 2), (True, 1, 3), (True, 0, 4)]
    assert [(s, e) for _b, s, e in KERNEL.chain(blocks, e_block, e_start, e_stop, e_prev, e_end,
                                                3, 20)] == [(0, 4)]  # records ending <= 20 sealed
    assert KERNEL.chain(blocks, e_block, e_start, e_stop, e_prev, e_end, -1, -1) == []
    with pytest.raises(IndexError):
        KERNEL.chain(blocks, e_block, e_start, e_stop, array("q", [0, -1, 0, 2]), e_end, 3, -1)
    with pytest.raises(IndexError):
        KERNEL.chain(blocks, e_block, e_start, e_stop, e_prev, e_end, 9, -1)
    with pytest.raises(IndexError):  # an end array shorter than the entries
        KERNEL.chain(blocks, e_block, e_start, e_stop, e_prev, array("q", [10]), 3, -1)
    with pytest.raises(TypeError):
        KERNEL.chain(blocks, [0, 0, 1, 2], e_start, e_stop, e_prev, e_end, 3, -1)


def test_gather_chain_copies_a_users_columns_oldest_first_and_stops_at_the_sealed_entry():
    """`gather_chain` (the seal's walk and gather in one C pass): the columns of the user's
    entries oldest first, nothing from an entry whose record ends (`e_end`) at or below
    `through`; None for an empty chain or an array it cannot copy; a looping or out-of-range
    chain raises."""
    from array import array

    blocks = [Block(np.arange(4, dtype=np.int64) + 10 * i,
                    {"x": np.arange(4, dtype=np.int32) + 100 * i}, np.full(4, 10 * (i + 1)), 4)
              for i in range(3)]
    e_end = array("q", [10, 10, 20, 30])
    e_block, e_start = array("q", [0, 0, 1, 2]), array("q", [0, 2, 1, 0])
    e_stop, e_prev = array("q", [2, 4, 3, 4]), array("q", [-1, -1, 0, 2])
    args = (e_block, e_start, e_stop, e_prev)
    ts, cols = KERNEL.gather_chain(blocks, e_end, *args, 3, -1, ("x",))
    assert ts.tolist() == [0, 1, 11, 12, 20, 21, 22, 23]
    assert cols["x"].dtype == np.int32
    assert cols["x"].tolist() == [100 * (t // 10) + t % 10 for t in ts.tolist()]
    ts, cols = KERNEL.gather_chain(blocks, e_end, *args, 3, 20, ("x",))
    assert ts.tolist() == [20, 21, 22, 23]  # records ending <= 20 were sealed
    assert KERNEL.gather_chain(blocks, e_end, *args, 3, 30, ("x",)) is None
    assert KERNEL.gather_chain(blocks, e_end, *args, -1, -1, ("x",)) is None
    odd = [Block(b.ts, {"x": b.cols["x"].astype(np.int64)}, b.ends, 4) if i == 1 else b
           for i, b in enumerate(blocks)]
    assert KERNEL.gather_chain(odd, e_end, *args, 3, -1, ("x",)) is None  # dtypes differ
    with pytest.raises(IndexError):
        KERNEL.gather_chain(blocks, e_end, e_block, e_start, e_stop, array("q", [0, -1, 0, 2]),
                            3, -1, ("x",))
    with pytest.raises(IndexError):
        KERNEL.gather_chain(blocks, e_end, *args, 9, -1, ("x",))
    with pytest.raises(IndexError):
        KERNEL.gather_chain(blocks, array("q", [10]), *args, 3, -1, ("x",))


def test_scatter_writes_byte_planes_and_plain_bytes_and_refuses_bad_positions():
    """`scatter` (segment_batch._scatter in C): byte p of a user's value i at
    offsets[u] + p * m[u] + i, and with `plain` the same bytes value after value; positions or
    users outside the arrays and widths above 8 raise instead of writing out of bounds."""
    values = np.array([0x0102, 0x0304, 0x05, 0xAABBCCDD], dtype=np.uint64)
    user_of = np.array([0, 0, 1, 2], dtype=np.int64)
    rank = np.array([0, 1, 0, 0], dtype=np.int64)
    width = np.array([2, 0, 4], dtype=np.int64)  # user 1 is constant: nothing stored
    m = np.array([2, 1, 1], dtype=np.int64)
    offsets = np.array([0, 4, 4], dtype=np.int64)
    shuffled, plain = KERNEL.scatter(values, user_of, rank, offsets, m, width, 8, True)
    assert shuffled.tolist() == [0x02, 0x04, 0x01, 0x03, 0xDD, 0xCC, 0xBB, 0xAA]
    assert plain.tolist() == [0x02, 0x01, 0x04, 0x03, 0xDD, 0xCC, 0xBB, 0xAA]
    assert KERNEL.scatter(values, user_of, rank, offsets, m, width, 8).tolist() == \
        shuffled.tolist()
    with pytest.raises(IndexError):
        KERNEL.scatter(values, user_of, rank, offsets, m, width, 7)
    with pytest.raises(IndexError):
        KERNEL.scatter(values, np.array([0, 0, 1, 3]), rank, offsets, m, width, 8)
    with pytest.raises(ValueError):
        KERNEL.scatter(values, user_of, rank, offsets, m, np.array([2, 0, 9]), 8)
    with pytest.raises(ValueError):
        KERNEL.scatter(values[:3], user_of, rank, offsets, m, width, 8)


# ------------------------------------------------------------------ a store, both paths
def test_both_paths_write_the_same_log_and_read_the_same(tmp_path, monkeypatch):
    rng = np.random.default_rng(11)
    calls = []
    for i in range(60):
        if i % 3:
            calls.append(("one", int(rng.integers(0, 5)), _mixed(rng, int(rng.integers(1, 5)))))
        else:
            data = _mixed(rng, 20)
            data["user_id"] = rng.integers(0, 8, 20)
            calls.append(("batch", None, data))
    payloads = {}
    reads = {}
    for path in ("native", "python"):
        monkeypatch.setattr(prepare, "KERNEL", KERNEL if path == "native" else None)
        v = SeqVault.open(tmp_path / path, schema=MIXED)
        for kind, key, data in calls:
            v.append(key, data) if kind == "one" else v.append_batch(data)
        log = v.path / "wal" / walmod.wal_name(v.wal_id)
        reads[path] = {u: {k: a.tolist() for k, a in v.read(u).items()} for u in range(8)}
        v.close(flush=False)
        payloads[path] = [r.payload for r in walmod.scan(log).records]
        v = SeqVault.open(tmp_path / path)  # replayed from the log
        assert {u: {k: a.tolist() for k, a in v.read(u).items()} for u in range(8)} == reads[path]
        v.close()
    assert len(payloads["native"]) == len(calls)
    assert payloads["native"] == payloads["python"]
    assert reads["native"] == reads["python"]


def test_a_uint64_list_across_2_63_keeps_its_exact_values():
    """numpy reads [2**63 + 5, 1] as float64; the reference path used to store the rounded
    value. Both paths now keep the ints exact."""
    big = [2**63 + 5, 1] * 40  # 80 rows: past validate's small-call path
    events = numeric_events(np.random.default_rng(1), 80, as_lists=True)
    events["u64"] = big
    _ts, cols = validate_append(NUMERIC, events)
    assert cols["u64"].tolist() == big
    assert_same(KERNEL.prepare(*_args(NUMERIC, 1, None, events)), reference_one(NUMERIC, 1, events))


def test_appends_read_back_and_replay_on_either_path(tmp_path, append_kernel):
    """The store through `append` and `append_batch` with plain calls (the kernel's cases when
    it is on): every event reads back, in time order per user, before and after a replay of
    the log, and a refused call leaves nothing behind."""
    rng = np.random.default_rng(5)
    want: dict[int, list[tuple[int, int]]] = {}
    v = SeqVault.open(tmp_path / "s", schema=MIXED, durability="batch")
    for i in range(80):
        if i % 2:
            user, ev = i % 7, _mixed(rng, int(rng.integers(1, 6)))
            v.append(user, ev)
            want.setdefault(user, []).extend(zip(ev["ts"], ev["item_id"]))
        else:
            data = _mixed(rng, 30)
            data["user_id"] = rng.integers(0, 7, 30)
            v.append_batch(data)
            for u, t, it in zip(data["user_id"].tolist(), data["ts"], data["item_id"]):
                want.setdefault(u, []).append((t, it))
    with pytest.raises(ValidationError, match="item_id"):
        v.append(1, {**_plain(), "item_id": [1, -1, 1 << 63]})
    v.close(flush=False)
    for _ in range(2):
        v = SeqVault.open(tmp_path / "s")
        for u, rows in want.items():
            got = v.read(u)
            order = sorted(range(len(rows)), key=lambda j: rows[j][0])  # stable: arrival ties
            assert got["ts"].tolist() == [rows[j][0] for j in order]
            assert got["item_id"].tolist() == [rows[j][1] for j in order]
        v.close()


def test_small_calls_share_blocks_and_leave_no_object_per_call(monkeypatch):
    """A memtable of small calls holds its rows in blocks of BLOCK_ROWS rows, not an object
    per call: the objects the collector tracks do not grow with the calls (one-event calls
    held ~1,600 bytes and three tracked objects each). A large call's arrays become a block of
    their own, and the small calls after it start a new block."""
    import gc

    monkeypatch.setattr(prepare, "KERNEL", KERNEL)
    m = MemTable()
    m.add_grouped([1], [1], np.arange(1, dtype=np.int64), {"x": np.arange(1, dtype=np.int32)})
    gc.collect()
    before = len(gc.get_objects())
    for i in range(2_000):
        m.add_grouped([i % 7, 100 + i % 50], [1, 2], np.arange(3, dtype=np.int64) + i,
                      {"x": np.arange(3, dtype=np.int32)}, end=i + 1)
    gc.collect()
    assert len(gc.get_objects()) - before < 200  # users' keys only: no object per call
    assert len(m.blocks) == -(-(1 + 6_000) // BLOCK_ROWS)
    assert m.rows == 6_001 and m.block_bytes == len(m.blocks) * BLOCK_ROWS * (m.row_bytes + 8)
    ts = np.arange(5_000, dtype=np.int64)
    m.add_grouped([5], [5_000], ts, {"x": np.zeros(5_000, np.int32)}, end=9_999)
    assert m.blocks[-1].ts is ts and m.blocks[-1].fill == 5_000  # its own arrays, no copy
    assert m.blocks[-1].ends.tolist() == [9_999] * 5_000  # one shared end, no array per row
    assert m.blocks[-1].ends.base is not None and m.blocks[-1].ends.strides == (0,)
    m.add_grouped([6], [1], np.arange(1, dtype=np.int64), {"x": np.arange(1, dtype=np.int32)},
                  end=10_000)
    assert m.blocks[-1].ts.size == BLOCK_ROWS and m.blocks[-1].fill == 1
    tail = m.get(3)
    assert tail is not None and tail.count == sum(1 for i in range(2_000) if i % 7 == 3)
    assert tail.arrays()[0].tolist() == [i for i in range(2_000) if i % 7 == 3]
