"""The background flush (docs/design/realtime.md, "Background flush"; docs/format/manifest.md,
"Commit protocol (a background flush)"): a full memtable is sealed by a thread while appends go
on into a new one; its commit records the log offset of the switch as the `flushed` mark (one
value, tests/engine/test_flushed_mark.py), so replays skip exactly its records and the log is
not rotated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from seqvault import Schema, SeqVault, sealing
from seqvault.errors import WriterFailed
from seqvault.faults import FAULT_ENV, FLUSH_FAULT_POINTS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"columns": [{"name": "item", "type": "int64", "default": 0},
                      {"name": "act", "type": "string", "default": "v"}]}
USERS = 12


def calls(n_calls: int, start: int = 0):
    """Appends of 10 events spread over the users; item ids are unique and increasing."""
    for c in range(start, start + n_calls):
        users = [(c * 7 + i) % USERS for i in range(10)]
        yield users, c


def append_call(v: SeqVault, oracle: dict[int, list[int]], users: list[int], c: int) -> None:
    for i, u in enumerate(users):
        item = c * 100 + i
        v.append(u, {"ts": [1_000 + c], "item": [item], "act": [f"a{c % 3}"]})
        oracle.setdefault(u, []).append(item)


def check(v: SeqVault, oracle: dict[int, list[int]]) -> None:
    for u, want in oracle.items():
        got = v.read(u)
        assert got.columns["item"].tolist() == want, u
        assert got.columns["act"].tolist() == [f"a{(i // 100) % 3}" for i in want], u


class Gate:
    """Holds the background flush's sealing until `open()`: its in-flight state is then
    observable without timing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        real = sealing.seal_memtable

        def gated(m, w, mem):
            self.entered.set()
            assert self.release.wait(60)
            if fail:
                raise RuntimeError("injected: the flush's encoder failed")
            return real(m, w, mem)

        monkeypatch.setattr(sealing, "seal_memtable", gated)

    def open(self) -> None:
        self.release.set()


def wait_flushed(v: SeqVault) -> None:
    with v.lock:
        v.wait_flush()


def open_store(path: Path, **kw) -> SeqVault:
    settings = dict(memtable_events=100, tail_events=40, durability="batch")
    settings.update(kw)
    return SeqVault.open(path, schema=Schema.from_dict(SCHEMA), **settings)


def test_a_full_memtable_is_sealed_in_the_background_and_every_read_sees_every_event(
        tmp_path, monkeypatch):
    gate = Gate(monkeypatch)
    oracle: dict[int, list[int]] = {}
    v = open_store(tmp_path / "s")
    wal_id = v.wal_id
    for users, c in calls(10):  # 100 events: the memtable is full, the flush starts
        append_call(v, oracle, users, c)
    assert gate.entered.wait(30)
    assert v.frozen is not None and v.frozen.events == 100
    for users, c in calls(8, start=10):  # appends go on into the new memtable
        append_call(v, oracle, users, c)
    assert v.mem.events == 80
    check(v, oracle)  # frozen + new memtable, joined per user, in arrival order
    gate.open()
    wait_flushed(v)
    assert v.frozen is None
    st = v.stats()
    assert st["flushes"] == 1 and st["sealed_events"] == 100 and st["memtable_events"] == 80
    assert v.wal_id == wal_id  # no log rotation
    check(v, oracle)
    v.close(flush=False)  # the log still holds the flushed records: replay must skip them
    with SeqVault.open(tmp_path / "s") as v:
        assert v.stats()["recovered_events"] == 80
        check(v, oracle)
        assert v.verify()["ok"]


def test_partial_seals_wait_for_the_flush_and_run_after_it(tmp_path, monkeypatch):
    gate = Gate(monkeypatch)
    oracle: dict[int, list[int]] = {}
    v = open_store(tmp_path / "s", memtable_events=60, tail_events=15)
    for users, c in calls(6):
        append_call(v, oracle, users, c)
    assert gate.entered.wait(30)
    for c in range(6, 9):  # one user past tail_events in the new memtable: deferred
        append_call(v, oracle, [3] * 10, c)
    assert v._counters["tail_seals"] == 0
    check(v, oracle)
    gate.open()
    wait_flushed(v)
    append_call(v, oracle, [3], 9)  # its next append seals it
    assert v.stats()["tail_seals"] == 1
    check(v, oracle)
    v.close(flush=False)
    with SeqVault.open(tmp_path / "s") as v:
        check(v, oracle)


def test_merge_and_delete_wait_for_the_flush_commit(tmp_path, monkeypatch):
    oracle: dict[int, list[int]] = {}
    v = open_store(tmp_path / "s", merge_worker="thread")
    for start in (0, 9):  # two flushes: two real-time segments a user, for merge to fold
        for users, c in calls(9, start=start):
            append_call(v, oracle, users, c)
        v.flush()
    gate = Gate(monkeypatch)
    for users, c in calls(10, start=18):
        append_call(v, oracle, users, c)
    assert gate.entered.wait(30)
    done: list[object] = []
    merger = threading.Thread(target=lambda: done.append(v.merge(worker="thread")))
    merger.start()
    deleter = threading.Thread(target=lambda: done.append(v.delete(5)))
    deleter.start()
    merger.join(0.5)
    deleter.join(0.5)
    # Both are parked in wait_flush: publishing now would overwrite lists the flush is about
    # to replace (or be overwritten by them).
    assert merger.is_alive() and deleter.is_alive() and not done
    gate.open()
    merger.join(60)
    deleter.join(60)
    assert len(done) == 2
    oracle.pop(5)
    check(v, oracle)
    assert v.read(5).columns["item"].tolist() == []
    assert v.verify()["ok"]
    v.close()
    with SeqVault.open(tmp_path / "s") as v:
        check(v, oracle)
        assert len(v.read(5)) == 0


def test_a_reader_sees_the_writers_answers_before_and_after_the_commit(tmp_path, monkeypatch):
    gate = Gate(monkeypatch)
    oracle: dict[int, list[int]] = {}
    v = open_store(tmp_path / "s")
    for users, c in calls(13):
        append_call(v, oracle, users, c)
    assert gate.entered.wait(30)
    v.sync()
    with SeqVault.open(tmp_path / "s", read_only=True, refresh_interval=3600) as r:
        check(r, oracle)
        gate.open()
        wait_flushed(v)
        append_call(v, oracle, [1, 2], 13)
        v.sync()
        r.refresh()  # drops the frozen memtable's records (sealed through), keeps the newer
        check(r, oracle)
        assert r.stats()["memtable_events"] == v.stats()["memtable_events"] == 32
    v.close()


def test_a_failed_background_flush_stops_the_writer_and_loses_nothing(tmp_path, monkeypatch):
    gate = Gate(monkeypatch, fail=True)
    oracle: dict[int, list[int]] = {}
    v = open_store(tmp_path / "s")
    for users, c in calls(10):
        append_call(v, oracle, users, c)
    gate.open()
    wait_flushed(v)
    check(v, oracle)  # the frozen events stay readable
    with pytest.raises(WriterFailed):
        v.append(1, {"ts": [5], "item": [5], "act": ["x"]})
    v.close()
    monkeypatch.undo()
    with SeqVault.open(tmp_path / "s") as v:
        check(v, oracle)
        assert v.verify()["ok"]


def test_flush_worker_caller_flushes_in_the_call_and_rotates_the_log(tmp_path):
    oracle: dict[int, list[int]] = {}
    v = open_store(tmp_path / "s", flush_worker="caller")
    wal_id = v.wal_id
    for users, c in calls(10):
        append_call(v, oracle, users, c)
    assert v.frozen is None and v.stats()["flushes"] == 1 and v.wal_id == wal_id + 1
    check(v, oracle)
    v.close()


def test_the_log_rotates_at_wal_bytes_with_the_flush_in_the_caller(tmp_path):
    oracle: dict[int, list[int]] = {}
    v = open_store(tmp_path / "s", memtable_events=1_000_000, wal_bytes=4096)
    wal_id = v.wal_id
    for users, c in calls(12):
        append_call(v, oracle, users, c)
    assert v.wal_id > wal_id and v.frozen is None
    check(v, oracle)
    v.close()


CHILD = r"""
import json, sys
from seqvault import Schema, SeqVault
v = SeqVault.open(sys.argv[1], schema=Schema.from_dict({schema!r}), durability="sync",
                  tail_events=1000, {cap})
for c in range(200):
    users = [(c * 7 + i) % 12 for i in range(10)]
    v.append_batch({{"user_id": users, "ts": [1000 + c] * 10,
                    "item": [c * 100 + i for i in range(10)], "act": ["a%d" % (c % 3)] * 10}})
    sys.stdout.write(json.dumps(c) + "\n"); sys.stdout.flush()
v.close()
"""


# The flush starts at the event cap, or at the byte cap long before the event cap (a call of
# 10 events costs ~2 KB of memtable: about 30 calls to 64 KiB).
CAPS = {"events": "memtable_events=60",
        "bytes": "memtable_events=1_000_000, memtable_bytes=65_536"}


@pytest.mark.parametrize("cap", sorted(CAPS))
@pytest.mark.parametrize("fault", [*FLUSH_FAULT_POINTS, "bgflush:after_write@3",
                                   "bgflush:after_commit@4"])
def test_sigkill_during_a_background_flush_loses_and_duplicates_nothing(tmp_path, fault, cap):
    store = tmp_path / "s"
    schema = SCHEMA
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{FAULT_ENV: fault})
    proc = subprocess.run([sys.executable, "-c", CHILD.format(schema=schema, cap=CAPS[cap]),
                           str(store)],
                          capture_output=True, env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    acked = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert acked, "the child was killed before any acknowledged append"
    with SeqVault.open(store) as v:
        for u in range(12):
            want = [c * 100 + i for c in acked for i in range(10) if (c * 7 + i) % 12 == u]
            got = v.read(u).columns["item"].tolist()
            # every acknowledged event once; the call in flight may be there too
            extra = got[len(want):]
            assert got[:len(want)] == want, (u, fault)
            assert all(x // 100 == acked[-1] + 1 for x in extra), (u, fault, extra)
        assert v.verify()["ok"]


def test_reads_during_many_background_flushes_match_a_model(tmp_path):
    """No gate: flushes start and commit while appends and reads go on."""
    oracle: dict[int, list[int]] = {}
    v = open_store(tmp_path / "s", memtable_events=50, tail_events=30)
    for users, c in calls(120):
        append_call(v, oracle, users, c)
        if c % 7 == 0:
            check(v, oracle)
    wait_flushed(v)
    assert v.stats()["flushes"] >= 10
    check(v, oracle)
    v.close(flush=False)
    with SeqVault.open(tmp_path / "s") as v:
        check(v, oracle)
        assert v.verify()["ok"]



def test_reclaim_keeps_the_files_a_flush_in_flight_is_writing(tmp_path, monkeypatch):
    """Files a background flush rolled over hold no live extent until its commit: dropping
    dead files must wait for the commit, or it would delete them under it."""
    from seqvault.reclaim import drop_dead_files

    oracle: dict[int, list[int]] = {}
    v = open_store(tmp_path / "s", max_file_bytes=600)  # the flush rolls over several files
    real = sealing.write_pieces
    wrote, release = threading.Event(), threading.Event()

    def write_then_hold(w, enc):
        got = real(w, enc)
        wrote.set()
        assert release.wait(60)
        return got

    monkeypatch.setattr(sealing, "write_pieces", write_then_hold)
    monkeypatch.setattr(sealing, "WRITE_CHUNK", 64)  # a write per segment: files roll over
    for users, c in calls(10):
        append_call(v, oracle, users, c)
    assert wrote.wait(30)
    assert len(v.writers["rt"].rolled) >= 1  # files no extent refers to yet
    done: list[dict] = []
    dropper = threading.Thread(target=lambda: done.append(drop_dead_files(v)))
    dropper.start()
    dropper.join(0.5)
    assert dropper.is_alive() and not done  # parked until the commit
    release.set()
    dropper.join(60)
    assert done and done[0]["files"] == 0
    check(v, oracle)
    assert v.verify()["ok"]
    v.close()
    with SeqVault.open(tmp_path / "s") as v:
        check(v, oracle)


@pytest.mark.parametrize("where", ["append", "commit"])
def test_a_failed_log_write_reports_only_after_the_flush_in_flight_ended(tmp_path, monkeypatch,
                                                                         where):
    # When the log fails under an append, the flush in flight fails too (or commits what was
    # durable) and cuts what it wrote; the append raises only after that, so the caller never
    # sees a failed writer with a thread still writing to its files (the fault loop found
    # unpublished bytes on disk after such a raise, with seals in a thread).
    gate = Gate(monkeypatch)
    oracle: dict[int, list[int]] = {}
    v = open_store(tmp_path / "s", durability="sync")
    for users, c in calls(10):
        append_call(v, oracle, users, c)
    assert gate.entered.wait(30)

    def broken(*_a, **_k):
        raise WriterFailed("injected: the log write failed")

    monkeypatch.setattr(v.wal, where, broken)
    opener = threading.Timer(0.2, gate.open)  # the flush can end only after the raise began
    opener.start()
    with pytest.raises(WriterFailed):
        v.append(1, {"ts": [5_000], "item": [1], "act": ["x"]})
    assert v._flush_thread is None and v.frozen is None  # settled before the raise
    opener.join()
    v.close()
    with SeqVault.open(tmp_path / "s") as v:
        # A failed commit (the fsync): the record was written, unacknowledged; it may be kept.
        got1 = v.read(1).columns["item"].tolist()
        assert got1 in (oracle[1], oracle[1] + [1]) if where == "commit" else True
        if where == "commit":
            oracle.pop(1)
        check(v, oracle)
        assert v.verify()["ok"]
