"""The whole append in one compiled call (`native_append.append_call`, used by
`SeqVault.append` and `append_batch` for plain calls on stores without string columns) against
the steps it replaces: the Python reference check (validate.py), the log record (wal.record),
its write at the log's end, and the memtable insert (`MemTable.add_grouped` on the Python
path). It must write the same bytes at the same offsets and leave the same memtable; when it
does not take a call it must write nothing and change nothing (the Python path then runs); a
failed write must raise and add nothing."""

from __future__ import annotations

import mmap
import os
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqvault import Schema, SeqVault, prepare
from seqvault import ring as ringmod
from seqvault import wal as walmod
from seqvault.errors import ValidationError, WriterFailed
from seqvault.memtable import BLOCK_ROWS, MemTable, StringDict, add_events
from seqvault.schema import MAX_STRING_CARDINALITY
from seqvault.validate import validate_append, validate_batch
from tests.conftest import native_required
from tests.storage.test_native_append import _state

KERNEL = prepare.load(honour_env=False)
pytestmark = pytest.mark.skipif(KERNEL is None and not native_required(),
                                reason="the compiled append kernel is not built")

NOW_MS = int(time.time() * 1000)
DEFAULTS = {"bool": False, "float32": 0.0, "float64": 0.0}
COLUMNS = [("i8", "int8"), ("u16", "uint16"), ("i32", "int32"), ("u64", "uint64"),
           ("f32", "float32"), ("f64", "float64"), ("flag", "bool")]
NUMERIC = Schema.from_dict({
    "user": {"column": "user_id", "type": "int64"},
    "time": {"column": "ts", "unit": "ms"},
    "columns": [{"name": n, "type": t, "default": DEFAULTS.get(t, 0)} for n, t in COLUMNS]})
# a string column too: its rows are coded with the store's StringDict in the same call
STRINGS = Schema.from_dict({
    "user": {"column": "user_id", "type": "int64"},
    "time": {"column": "ts", "unit": "ms"},
    "columns": [{"name": n, "type": t, "default": DEFAULTS.get(t, 0)} for n, t in COLUMNS]
    + [{"name": "tag", "type": "string", "default": ""}]})
TAGS = ["", "a", "b", "é" * 40, "x" * 300, "click", "view"]
STRING_USERS = Schema.from_dict({
    "user": {"column": "user", "type": "string"},
    "time": {"column": "ts", "unit": "ms"},
    "columns": [{"name": n, "type": t, "default": DEFAULTS.get(t, 0)} for n, t in COLUMNS]})
ROOM = 1 << 20  # the log "file" below: records may end up to here
RING = 80 << 10  # the staging ring's body in these tests (the store's: ring.SIZE)


def events(rng: np.random.Generator, n: int, as_lists: bool = False, tags: bool = False
           ) -> dict[str, Any]:
    cols: dict[str, Any] = {"ts": NOW_MS - rng.integers(0, 10**6, n)}
    for name, t in COLUMNS:
        if t == "bool":
            cols[name] = rng.random(n) < 0.5
        elif t.startswith("float"):
            cols[name] = rng.standard_normal(n).astype(t)
        else:
            info = np.iinfo(t)
            cols[name] = rng.integers(info.min, info.max, n, dtype=t, endpoint=True)
    if tags:  # new strings keep coming (a per-call one), old ones repeat
        pool = TAGS + [f"t{rng.integers(0, 10**6)}"]
        cols["tag"] = [pool[i] for i in rng.integers(0, len(pool), n)]
        if not as_lists:
            cols["tag"] = np.array(cols["tag"], dtype=object)
    if as_lists:
        for name in ("ts", "i8", "u16", "i32", "u64"):
            cols[name] = cols[name].tolist()
    return cols


class Log:
    """A log file's records region and the writer's position in it (WalWriter's fields)."""

    def __init__(self, path: Path, ring: bool = False) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(self.fd, bytes(ROOM), 0)
        self.end = self.seq = self.events = 0
        # WalWriter's staging ring (seqvault/ring.py), small here so that records wrap
        self.ring = None
        if ring:
            rfd = os.open(path.with_suffix(".ring"), os.O_RDWR | os.O_CREAT, 0o644)
            os.pwrite(rfd, bytes(ringmod.HEADER_SIZE + RING), 0)
            self.ring = mmap.mmap(rfd, ringmod.HEADER_SIZE + RING)
            os.close(rfd)

    def position(self, room: int = ROOM) -> tuple[int, int, int, int, int, Any, int, int]:
        if self.ring is None:
            return (self.fd, self.end, self.seq, self.events, room, None, 0, 0)
        # every staged record is copied out at once (below), so all of the ring is room
        return (self.fd, self.end, self.seq, self.events, room, self.ring, RING, self.end + RING)

    def copy_out(self, start: int, end: int) -> None:
        """What the flusher does (WalWriter._copy_out): the staged bytes into the file."""
        assert self.ring is not None
        pos, n = ringmod.HEADER_SIZE + start % RING, end - start
        first = min(n, ringmod.HEADER_SIZE + RING - pos)
        data = self.ring[pos:pos + first] + self.ring[ringmod.HEADER_SIZE:
                                                      ringmod.HEADER_SIZE + n - first]
        os.pwrite(self.fd, data, start)

    def write(self, payload: bytes, n: int) -> int:
        rec = walmod.record(payload, walmod.REC_APPEND, self.seq, self.events, n)
        os.pwrite(self.fd, rec, self.end)
        self.took(self.end + len(rec), n)
        return self.end

    def took(self, end: int, n: int) -> None:
        self.end, self.seq, self.events = end, self.seq + 1, self.events + n

    def bytes(self) -> bytes:
        return os.pread(self.fd, ROOM, 0)

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
        os.close(self.fd)


def dicts_of(schema: Schema) -> dict[str, StringDict]:
    return {c.name: StringDict(c.name) for c in schema.columns if c.is_string}


def python_steps(schema: Schema, mem: MemTable, log: Log, key: Any, users: Any,
                 cols: dict[str, Any], seal_at: int,
                 dicts: dict[str, StringDict] | None = None) -> list[Any]:
    """What the store did before append_call, one step at a time, all in Python."""
    if users is None:
        ts, c = validate_append(schema, cols)
        keys, counts = [key], [int(ts.size)]
    else:
        keys, counts, ts, c = validate_batch(schema, {**cols, schema.user_column: users})
    payload = walmod.encode_append(schema, keys, counts, ts, c)
    for name, d in (dicts or {}).items():
        d.check_room(c[name])
    end = log.write(payload, int(ts.size))
    old, prepare.KERNEL = prepare.KERNEL, None
    try:
        return add_events(mem, dicts or {}, keys, counts, ts, c, end=end, seal_at=seal_at)
    finally:
        prepare.KERNEL = old


def call(schema: Schema, key: Any, users: Any, columns: dict[str, Any], mem: MemTable,
         block: Any, seal_at: int, log: tuple[int, int, int, int, int, Any, int, int],
         dicts: dict[str, StringDict] | None = None,
         max_strings: int = MAX_STRING_CARDINALITY) -> Any:
    spec, min_ts = prepare.call_spec(schema)
    return KERNEL.append_call(spec, key, users, columns, min_ts, mem._parts, block, seal_at,
                              dicts or {}, max_strings, log)


def compiled_call(schema: Schema, mem: MemTable, log: Log, key: Any, users: Any,
                  cols: dict[str, Any], seal_at: int,
                  dicts: dict[str, StringDict] | None = None) -> tuple[list[Any], bool]:
    """The store's way now: append_call, or the Python steps when it declines."""
    columns = cols if users is None else {**cols, schema.user_column: users}
    block = mem.blocks[-1] if mem.blocks else None
    got = call(schema, key, users, columns, mem, block, seal_at, log.position(), dicts)
    if got is None:
        return python_steps(schema, mem, log, key, users, cols, seal_at, dicts), False
    assert len(got) == 6
    end, n, full, top, rows, refs = got
    if log.ring is not None:
        log.copy_out(log.end, end)
    log.took(end, n)
    mem.events += n
    mem.rows += n
    mem.max_tail = max(mem.max_tail, top)
    mem.tail_rows += rows
    mem.tail_refs += refs
    return full, True


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40), st.booleans(), st.booleans(), st.booleans())
def test_append_call_writes_and_adds_what_the_python_steps_do(tmp_path_factory, seed, width,
                                                              as_lists, tags, ring):
    """Calls of one user and batches of several (unsorted, repeated users), shared blocks
    filling up (a new block is the Python path's: the call is declined, then done there),
    large calls in blocks of their own,
    tails built by reads and extended by later calls, users reaching seal_at, a string
    column's new and known strings: the log's bytes, the memtable and the dictionary are the
    same both ways, and so are the users each call reports full. `ring`: the compiled call
    stages its records in a (small, wrapping) ring, copied into the log after each call."""
    tmp = tmp_path_factory.mktemp("append_call")
    rng = np.random.default_rng(seed)
    schema = STRINGS if tags else NUMERIC
    logs = {"compiled": Log(tmp / "compiled", ring), "python": Log(tmp / "python")}
    mems = {"compiled": MemTable(), "python": MemTable()}
    dicts = {"compiled": dicts_of(schema), "python": dicts_of(schema)}
    taken = 0
    try:
        for step in range(60):
            # now and then a call past the kernel's 1,024 rows: the Python path gives it a
            # block of its own arrays, which the next call must not write into
            n = 1_500 if step % 13 == 6 else int(rng.integers(1, 3 * width + 1))
            cols = events(rng, n, as_lists, tags)
            if step % 3:
                key, users = int(rng.integers(-(1 << 63), 1 << 63)) if step % 5 == 1 else \
                    int(rng.integers(0, width)), None
            else:
                key, users = None, rng.integers(0, width, n)
                if as_lists:
                    users = users.tolist()
            full_c, took = compiled_call(schema, mems["compiled"], logs["compiled"], key,
                                         users, cols, 50, dicts["compiled"])
            taken += took
            full_p = python_steps(schema, mems["python"], logs["python"], key, users, cols,
                                  50, dicts["python"])
            assert full_c == full_p
            if step % 9 == 4:  # a read builds a tail that later calls extend
                user = int(rng.integers(0, width))
                for mem in mems.values():
                    mem.get(user)
        assert taken >= 35  # most calls went through append_call, not the fallback
        assert logs["compiled"].bytes() == logs["python"].bytes()
        assert (logs["compiled"].end, logs["compiled"].seq, logs["compiled"].events) == (
            logs["python"].end, logs["python"].seq, logs["python"].events)
        assert _state(mems["compiled"]) == _state(mems["python"])
        for name, d in dicts["python"].items():
            assert dicts["compiled"][name].values == d.values and len(d.values) > 7
            assert dicts["compiled"][name].codes == d.codes
    finally:
        for log in logs.values():
            log.close()


def test_a_string_user_key_is_written_as_the_python_steps_write_it(tmp_path):
    rng = np.random.default_rng(4)
    logs = {"compiled": Log(tmp_path / "c"), "python": Log(tmp_path / "p")}
    mems = {"compiled": MemTable(), "python": MemTable()}
    try:
        for i, key in enumerate(["", "a", "é" * 50, "x" * 300, "a"]):
            cols = events(rng, 1 + i)
            compiled_call(STRING_USERS, mems["compiled"], logs["compiled"], key, None, cols, 0)
            python_steps(STRING_USERS, mems["python"], logs["python"], key, None, cols, 0)
        assert logs["compiled"].bytes() == logs["python"].bytes()
        assert _state(mems["compiled"]) == _state(mems["python"])
    finally:
        for log in logs.values():
            log.close()


def _started(tmp_path: Path) -> tuple[MemTable, Log, dict[str, Any]]:
    """A memtable with a block (the first call's, through the Python steps) and a log."""
    mem, log = MemTable(), Log(tmp_path / "log")
    python_steps(NUMERIC, mem, log, 1, None, events(np.random.default_rng(0), 2), 0)
    return mem, log, events(np.random.default_rng(1), 3)


DECLINED = {
    "NaN refused": lambda e: {**e, "f32": np.array([0, np.nan, 1], np.float32)},
    "wrong dtype": lambda e: {**e, "u16": np.ones(3, np.int64)},
    "a bool in an int list": lambda e: {**e, "i32": [1, True, 2]},
    "time before the plausible floor": lambda e: {**e, "ts": [5, 6, 7]},
    "time past max_ts": lambda e: {**e, "ts": [NUMERIC.max_ts + 1] * 3},
    "a missing column": lambda e: {k: v for k, v in e.items() if k != "flag"},
    "not a canonical bool": lambda e: {**e, "flag": np.array([0, 2, 1], np.uint8).view(bool)},
}
# validate.py takes these in its own way (casts in-range values, a bool to 1, a nonzero byte
# to True; small timestamps pass its checks): the kernel leaves every such judgement to it
PYTHON_TAKES = {"wrong dtype", "a bool in an int list", "not a canonical bool",
                "time before the plausible floor"}


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_a_call_it_does_not_take_writes_nothing_and_adds_nothing(tmp_path, case):
    """None, the log's bytes and the memtable as they were: the Python path runs next and
    names the problem, or takes the call (PYTHON_TAKES) in its own way."""
    mem, log, cols = _started(tmp_path)
    try:
        before, state = log.bytes(), _state(mem)
        bad = DECLINED[case](cols)
        assert call(NUMERIC, 7, None, bad, mem, mem.blocks[-1], 0, log.position()) is None
        assert log.bytes() == before and _state(mem) == state
        if case in PYTHON_TAKES:
            validate_append(NUMERIC, bad)
        else:
            with pytest.raises(ValidationError):
                validate_append(NUMERIC, bad)
    finally:
        log.close()


def test_no_room_in_the_block_or_the_log_writes_nothing(tmp_path):
    mem, log, cols = _started(tmp_path)
    try:
        before, state = log.bytes(), _state(mem)
        block = mem.blocks[-1]
        # the log: a record must end at or before room_end (WalWriter keeps half a chunk free)
        assert call(NUMERIC, 7, None, cols, mem, block, 0,
                    log.position(room=log.end + 40)) is None
        # the block: its rows past fill must fit (the Python path starts a new block)
        block.fill = BLOCK_ROWS - 2
        assert call(NUMERIC, 7, None, cols, mem, block, 0, log.position()) is None
        block.fill = 2
        assert log.bytes() == before and _state(mem) == state
        # a block that is not the memtable's last is refused outright
        with pytest.raises(ValueError, match="last of blocks"):
            call(NUMERIC, 7, None, cols, mem, types.SimpleNamespace(), 0, log.position())
        got = call(NUMERIC, 7, None, cols, mem, block, 0, log.position())
        assert got is not None and got[1] == 3 and mem.blocks[-1].fill == 5
    finally:
        log.close()


def _started_strings(tmp_path: Path) -> tuple[MemTable, Log, dict[str, StringDict], dict]:
    mem, log, dicts = MemTable(), Log(tmp_path / "log"), dicts_of(STRINGS)
    rng = np.random.default_rng(0)
    python_steps(STRINGS, mem, log, 1, None, {**events(rng, 2), "tag": ["a", "b"]}, 0, dicts)
    return mem, log, dicts, {**events(rng, 3), "tag": ["new", "a", "new"]}


def test_a_failed_write_raises_and_adds_nothing(tmp_path):
    """Nothing in the memtable, and no new string in the dictionary (codes follow the log)."""
    mem, log, dicts, cols = _started_strings(tmp_path)
    try:
        state, values = _state(mem), list(dicts["tag"].values)
        ro = os.open(log.path, os.O_RDONLY)
        try:
            with pytest.raises(OSError):
                call(STRINGS, 7, None, cols, mem, mem.blocks[-1], 0,
                     (ro, log.end, log.seq, log.events, ROOM, None, 0, 0), dicts)
        finally:
            os.close(ro)
        assert _state(mem) == state
        assert dicts["tag"].values == values and "new" not in dicts["tag"].codes
        got = call(STRINGS, 7, None, cols, mem, mem.blocks[-1], 0, log.position(), dicts)
        assert got is not None and dicts["tag"].values[len(values):] == ["new"]
        assert mem.blocks[-1].cols["tag"][2:5].tolist() == [
            len(values), dicts["tag"].codes["a"], len(values)]
    finally:
        log.close()


STRINGS_DECLINED = {
    "None in a string list": ["x", None, "y"],
    "an int in a string list": ["x", 3, "y"],
    "a lone surrogate": ["x", "\ud800", "y"],
    "a numpy unicode array": np.array(["x", "y", "z"]),
}


@pytest.mark.parametrize("case", sorted(STRINGS_DECLINED))
def test_a_string_column_it_does_not_take_leaves_the_dictionary(tmp_path, case):
    mem, log, dicts, cols = _started_strings(tmp_path)
    try:
        before, state, values = log.bytes(), _state(mem), list(dicts["tag"].values)
        bad = {**cols, "tag": STRINGS_DECLINED[case]}
        assert call(STRINGS, 7, None, bad, mem, mem.blocks[-1], 0, log.position(),
                    dicts) is None
        assert log.bytes() == before and _state(mem) == state
        assert dicts["tag"].values == values and "x" not in dicts["tag"].codes
    finally:
        log.close()


def test_near_the_cardinality_limit_the_python_path_decides(tmp_path):
    """Room for every row's string to be new, or None: StringDict.check_room then counts the
    new ones exactly and names the column when the limit would pass."""
    mem, log, dicts, cols = _started_strings(tmp_path)
    try:
        before, have = log.bytes(), len(dicts["tag"].values)
        assert call(STRINGS, 7, None, cols, mem, mem.blocks[-1], 0, log.position(), dicts,
                    max_strings=have + 2) is None
        assert log.bytes() == before and len(dicts["tag"].values) == have
        assert call(STRINGS, 7, None, cols, mem, mem.blocks[-1], 0, log.position(), dicts,
                    max_strings=have + 3) is not None
    finally:
        log.close()


# ------------------------------------------------------------------ through the store
def counting_kernel() -> tuple[types.SimpleNamespace, list[int]]:
    """The kernel with the calls append_call took counted: the store does go through it."""
    calls = [0]

    def append_call(*args: Any) -> Any:
        got = KERNEL.append_call(*args)
        calls[0] += got is not None
        return got

    funcs = {k: getattr(KERNEL, k) for k in dir(KERNEL) if not k.startswith("_")}
    return types.SimpleNamespace(**{**funcs, "append_call": append_call}), calls


@pytest.mark.parametrize("durability", ["sync", "batch", "none"])
@pytest.mark.parametrize("schema", [NUMERIC, STRINGS], ids=["numeric", "strings"])
def test_the_store_writes_the_same_log_and_reads_the_same_either_way(tmp_path, monkeypatch,
                                                                     durability, schema):
    rng = np.random.default_rng(12)
    tags = schema is STRINGS
    plan = []
    for i in range(300):
        if i % 4:
            plan.append((int(rng.integers(0, 9)),
                         events(rng, int(rng.integers(1, 4)), bool(i % 2), tags)))
        else:
            cols = events(rng, 25, tags=tags)
            plan.append((None, {**cols, "user_id": rng.integers(0, 9, 25)}))
    payloads, reads = {}, {}
    for way in ("compiled", "python"):
        counted, calls = counting_kernel()
        monkeypatch.setattr(prepare, "KERNEL", counted if way == "compiled" else None)
        v = SeqVault.open(tmp_path / way, schema=schema, durability=durability,
                          tail_events=64, memtable_events=2_000)
        for key, data in plan:
            v.append(key, data) if key is not None else v.append_batch(data)
        reads[way] = {u: {k: a.tolist() for k, a in v.read(u).items()} for u in range(9)}
        log = v.path / "wal" / walmod.wal_name(v.wal_id)
        v.close(flush=False)
        payloads[way] = [r.payload for r in walmod.scan(log).records]
        with SeqVault.open(tmp_path / way) as v:  # replayed from the log and the segments
            assert {u: {k: a.tolist() for k, a in v.read(u).items()}
                    for u in range(9)} == reads[way]
        if way == "compiled":  # all but a memtable's first call (which starts its block)
            assert len(plan) - 10 <= calls[0] < len(plan)
    assert payloads["compiled"] == payloads["python"]
    assert reads["compiled"] == reads["python"]


def test_a_write_that_fails_in_the_compiled_call_stops_the_writer(tmp_path, monkeypatch):
    """The log's write fails under append_call (its fd read-only here): the append raises
    WriterFailed, every later write is refused, and a reopen has each acknowledged append.
    (Without the staging ring: a store into it has no error to return.)"""
    monkeypatch.setenv("SEQVAULT_LOG_RING", "off")
    v = SeqVault.open(tmp_path / "s", schema=NUMERIC, durability="batch")
    assert v.wal is not None and v.wal.ring is None
    rng = np.random.default_rng(2)
    first = events(rng, 4)
    v.append(1, first)
    v.append(1, events(rng, 2))  # the block exists: this one is append_call's
    wal = v.wal
    assert wal is not None
    real = wal._fd
    wal._fd = os.open(wal.path, os.O_RDONLY)
    try:
        with pytest.raises(WriterFailed, match="writing the log failed"):
            v.append(1, events(rng, 1))
        with pytest.raises(WriterFailed):
            v.append(2, events(rng, 1))
    finally:
        os.close(wal._fd)
        wal._fd = real
    v.close(flush=False)
    with SeqVault.open(tmp_path / "s") as v:
        assert v.read(1)["ts"].size == 6
        assert v.read(2)["ts"].size == 0
