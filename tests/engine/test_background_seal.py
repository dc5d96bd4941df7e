"""The partial seal in the background (docs/design/realtime.md, "The partial seal in the
background"): with `flush_worker = "thread"` (the default) a user whose tail reaches
`tail_events` is sealed by a thread while appends and reads go on. The tails are taken under
the store lock, encoded and fsynced outside it, and committed together with the memtable's
drop, so every read sees each event once; a seal that finds another in flight is left to
the user's next append; a failure stops the writer and loses nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from seqvault import Schema, SeqVault, sealing
from seqvault.errors import WriterFailed

SCHEMA = {"columns": [{"name": "item", "type": "int64", "default": 0},
                      {"name": "act", "type": "string", "default": "v"}]}
SEAL_AT = 30


def ev(start: int, n: int) -> dict:
    return {"ts": [1_000 + i for i in range(start, start + n)],
            "item": list(range(start, start + n)), "act": [f"a{i % 4}" for i in range(start, start + n)]}


def items(v: SeqVault, user: int) -> list[int]:
    return v.read(user).columns["item"].tolist()


def open_store(path: Path, **kw) -> SeqVault:
    settings = dict(tail_events=SEAL_AT, durability="batch", flush_worker="thread")
    settings.update(kw)
    return SeqVault.open(path, schema=Schema.from_dict(SCHEMA), **settings)


class SealGate:
    """Holds the background seal after it took its tails and before it encodes them, until
    `open()`: the in-flight state is then observable without timing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []
        real = sealing.seal_tails

        def gated(m, w, tails):
            self.threads.append(threading.current_thread().name)
            self.entered.set()
            assert self.release.wait(60)
            if fail:
                raise OSError(5, "injected: the seal's write failed")
            return real(m, w, tails)

        monkeypatch.setattr(sealing, "seal_tails", gated)

    def open(self) -> None:
        self.release.set()


def settled(v: SeqVault) -> None:
    with v.lock:
        v.wait_flush()


def test_the_seal_runs_in_a_thread_and_the_append_returns_before_it(tmp_path, monkeypatch,
                                                                   append_kernel):
    gate = SealGate(monkeypatch)
    with open_store(tmp_path / "s") as v:
        v.append(1, ev(0, SEAL_AT))  # reaches tail_events: a seal starts, the call returns
        assert gate.entered.wait(30)
        assert gate.threads == ["seqvault-seal"]
        assert v._counters["tail_seals"] == 0  # not committed: the gate holds it
        assert items(v, 1) == list(range(SEAL_AT))  # read from the memtable meanwhile
        gate.open()
        settled(v)
        st = v.stats()
        assert st["tail_seals"] == 1 and st["sealed_events"] == SEAL_AT
        assert st["memtable_events"] == 0
        assert items(v, 1) == list(range(SEAL_AT))


def test_appends_to_a_user_while_its_tail_is_sealed_are_kept_once(tmp_path, monkeypatch,
                                                                  append_kernel):
    # The seal took the tail through offset E; appends after E stay in the memtable. A seal
    # that encoded the memtable's own (growing) tail outside the lock would take them too and
    # the read would see them twice.
    gate = SealGate(monkeypatch)
    store = tmp_path / "s"
    with open_store(store) as v:
        v.append(1, ev(0, 10))
        assert items(v, 1) == list(range(10))  # builds the user's tail object in the memtable
        v.append(1, ev(10, SEAL_AT))  # 40 events: sealed in the background
        assert gate.entered.wait(30)
        v.append(1, ev(40, 5))  # during the seal
        v.append(2, ev(0, 3))
        assert items(v, 1) == list(range(45))
        gate.open()
        settled(v)
        assert v.stats()["tail_seals"] == 1
        assert v.stats()["memtable_events"] == 8  # user 1's 5 and user 2's 3
        assert items(v, 1) == list(range(45))
        with SeqVault.open(store, read_only=True) as r:  # replays exactly what the writer kept
            assert items(r, 1) == list(range(45)) and items(r, 2) == [0, 1, 2]
        v.close(flush=False)
    with SeqVault.open(store) as v:  # recovery skips the sealed records only
        assert items(v, 1) == list(range(45)) and items(v, 2) == [0, 1, 2]
        assert v.verify()["ok"]


def test_a_seal_that_finds_one_in_flight_is_left_to_the_users_next_append(tmp_path,
                                                                          monkeypatch):
    gate = SealGate(monkeypatch)
    with open_store(tmp_path / "s") as v:
        v.append(1, ev(0, SEAL_AT))
        assert gate.entered.wait(30)
        v.append(2, ev(0, SEAL_AT + 5))  # reaches tail_events while user 1's seal is in flight
        assert gate.threads == ["seqvault-seal"]  # no second seal started
        gate.open()
        settled(v)
        st = v.stats()
        assert st["tail_seals"] == 1 and st["memtable_events"] == SEAL_AT + 5
        v.append(2, ev(SEAL_AT + 5, 1))  # its next append seals it
        settled(v)
        st = v.stats()
        assert st["tail_seals"] == 2 and st["memtable_events"] == 0
        assert items(v, 2) == list(range(SEAL_AT + 6))


def test_a_reader_sees_the_writers_answers_during_and_after_the_seal(tmp_path, monkeypatch):
    gate = SealGate(monkeypatch)
    store = tmp_path / "s"
    with open_store(store) as w, SeqVault.open(store, read_only=True,
                                                refresh_interval=3600) as r:
        w.append(1, ev(0, SEAL_AT))
        assert gate.entered.wait(30)
        w.append(1, ev(SEAL_AT, 2))
        r.refresh()
        assert items(r, 1) == items(w, 1) == list(range(SEAL_AT + 2))
        gate.open()
        settled(w)
        r.refresh()
        assert items(r, 1) == items(w, 1) == list(range(SEAL_AT + 2))
        assert r.stats()["memtable_events"] == 2  # the sealed records are skipped


def test_flush_merge_and_delete_wait_for_the_seal(tmp_path, monkeypatch):
    gate = SealGate(monkeypatch)
    with open_store(tmp_path / "s") as v:
        v.append(1, ev(0, SEAL_AT))
        v.append(2, ev(0, 4))
        assert gate.entered.wait(30)
        done: list[str] = []

        def ops() -> None:
            v.delete(2)
            done.append("delete")
            v.flush()
            done.append("flush")
            v.merge()
            done.append("merge")

        t = threading.Thread(target=ops)
        t.start()
        t.join(0.3)
        assert done == []  # every one waits for the seal's commit
        gate.open()
        t.join(60)
        assert done == ["delete", "flush", "merge"]
        assert items(v, 1) == list(range(SEAL_AT)) and items(v, 2) == []
        assert v.verify()["ok"]


def test_a_failed_background_seal_stops_the_writer_and_loses_nothing(tmp_path, monkeypatch):
    gate = SealGate(monkeypatch, fail=True)
    store = tmp_path / "s"
    v = open_store(store, durability="sync")
    v.append(1, ev(0, SEAL_AT))
    v.append(2, ev(0, 3))
    assert gate.entered.wait(30)
    gate.open()
    settled(v)
    with pytest.raises(WriterFailed):
        v.append(3, ev(0, 1))  # nothing more is acknowledged
    assert items(v, 1) == list(range(SEAL_AT))  # still served from the memtable
    v.close()
    monkeypatch.undo()
    with SeqVault.open(store) as v:  # every acknowledged event, once
        assert items(v, 1) == list(range(SEAL_AT)) and items(v, 2) == [0, 1, 2]
        assert items(v, 3) == []
        assert v.verify()["ok"]


def test_a_read_racing_the_seals_commit_sees_each_event_once(tmp_path):
    # The commit and the memtable's drop are one hold of the store lock: a read that asks for
    # the lock as the commit lands gets it after the drop (segments only), never between the
    # two (segments and the memtable's copy: every sealed event twice).
    seen: list[list[int]] = []
    with open_store(tmp_path / "s") as v:
        commit = v.manifest.commit
        readers: list[threading.Thread] = []

        def committed(edit):
            out = commit(edit)
            if edit.sealed and threading.current_thread().name == "seqvault-seal":
                t = threading.Thread(target=lambda: seen.append(items(v, 1)))
                t.start()  # blocks on the store lock the seal still holds
                readers.append(t)
            return out

        v.manifest.commit = committed
        v.append(1, ev(0, SEAL_AT))
        settled(v)
        for t in readers:
            t.join(30)
        assert v.stats()["tail_seals"] == 1
    assert seen == [list(range(SEAL_AT))]
