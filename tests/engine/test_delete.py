"""Deleting a user (issue 14, finding 8; docs/design/safety.md, "Deleting a user"): reads are
empty (or cut) at once in the writer and after refresh in every reader, the counts survive a
reopen, the bytes are gone from every file of the store after the next merge, and a SIGKILL at
any step loses nothing else and resurrects nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqvault import Schema, SeqVault
from seqvault.faults import FAULT_ENV

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"user": {"column": "user_id", "type": "string"},
          "columns": [{"name": "item", "type": "int64", "default": 0},
                      {"name": "act", "type": "string", "default": "v"}]}
# The planted pattern: the user's key, which every segment header and log record of the user
# holds verbatim (string column values are shared dictionary entries, not the user's bytes).
VICTIM = "ERASE-ME-5f2c91d7e04b"
OTHERS = [f"keep-{i}" for i in range(6)]


def ev(start: int, n: int, act: str = "v") -> dict:
    return {"ts": np.arange(start, start + n), "item": np.arange(start, start + n) * 10,
            "act": [act] * n}


def items(v: SeqVault, user: str, **kw) -> list[int]:
    return v.read(user, **kw).columns["item"].tolist()


def files_holding(store: Path, pattern: bytes) -> list[str]:
    """Every file under the store directory (data/, wal/, meta/ — LMDB and checkpoints — and
    anything else) whose bytes contain `pattern`."""
    hits = []
    for dirpath, _dirs, names in os.walk(store):
        for name in names:
            p = Path(dirpath) / name
            if pattern in p.read_bytes():
                hits.append(str(p.relative_to(store)))
    return sorted(hits)


def fill(v: SeqVault) -> dict[str, list[int]]:
    """Every user in every place: lifetime segments (merged), real-time segments (a flush and
    a partial seal), and the memtable + log."""
    for start in (0, 15):
        for u in [VICTIM, *OTHERS]:
            v.append(u, ev(start, 15))
        v.flush()
    assert v.merge()["segments_out"] == 1 + len(OTHERS)  # lt segments
    for u in [VICTIM, *OTHERS]:
        v.append(u, ev(30, 20))
    v.flush()  # rt segments
    v.append(VICTIM, ev(50, 70))  # >= tail_events: a partial seal
    for u in [VICTIM, *OTHERS]:
        v.append(u, ev(120, 5))  # memtable + log only
    return {u: items(v, u) for u in OTHERS}


def open_store(store: Path, **kw) -> SeqVault:
    return SeqVault.open(store, schema=Schema.from_dict(SCHEMA), tail_events=64, **kw)


def test_deleted_user_reads_empty_at_once_and_in_readers_after_refresh(tmp_path):
    store = tmp_path / "s"
    with open_store(store) as w:
        kept = fill(w)
        reader = SeqVault.open(store, read_only=True, refresh_interval=3600)
        assert len(reader.read(VICTIM)) == 125
        assert w.delete(VICTIM) == 125
        assert len(w.read(VICTIM)) == 0  # at once, in the writer
        reader.refresh()
        assert len(reader.read(VICTIM)) == 0
        assert reader.stats()["memtable_events"] == 5 * len(OTHERS)
        late = SeqVault.open(store, read_only=True)  # replays the log, skipping the victim
        assert len(late.read(VICTIM)) == 0
        for r in (w, reader, late):
            assert {u: items(r, u) for u in OTHERS} == kept
            assert VICTIM not in set(r.users())
        st = w.stats()
        assert (st["deleted_users"], st["deleted_events"]) == (1, 125)
        assert st["users"] == len(OTHERS) and st["events"] == 55 * len(OTHERS)
        assert st["delete_pending_files"] > 0 and st["delete_pending_logs"] == 1
        reader.close()
        late.close()
        w.close(flush=False)  # the log still holds the victim's records
    with SeqVault.open(store) as v:  # survives a reopen: recovery skips them
        assert len(v.read(VICTIM)) == 0
        assert {u: items(v, u) for u in OTHERS} == kept
        st = v.stats()
        assert (st["deleted_users"], st["deleted_events"]) == (1, 125)
        assert v.verify()["ok"]


def test_bytes_are_gone_from_every_file_after_the_next_merge(tmp_path):
    store = tmp_path / "s"
    pattern = VICTIM.encode()
    # An event value too: a distinctive item id, raw little-endian in the log record.
    item = (0x5EC2E7DA7A0B1C2D).to_bytes(8, "little")
    with open_store(store) as v:
        kept = fill(v)
        v.append(VICTIM, {"ts": [130], "item": [0x5EC2E7DA7A0B1C2D], "act": ["v"]})
        before = files_holding(store, pattern)
        assert any(p.startswith("data/") for p in before), before
        assert any(p.startswith("wal/") for p in before), before
        in_log = files_holding(store, item)
        assert in_log and all(p.startswith("wal/") for p in in_log), in_log
        v.delete(VICTIM)
        assert files_holding(store, pattern), "nothing is rewritten until the next merge"
        summary = v.merge()
        assert summary["purge_pending_files"] == 0 and summary["purge_pending_logs"] == 0
        assert files_holding(store, pattern) == [] and files_holding(store, item) == []
        st = v.stats()
        assert st["delete_pending_files"] == 0 and st["delete_pending_logs"] == 0
        assert {u: items(v, u) for u in OTHERS} == kept
        assert v.verify()["ok"]
    assert files_holding(store, pattern) == []  # and after close (flush, checkpoint)
    with SeqVault.open(store, read_only=True) as r:
        assert len(r.read(VICTIM)) == 0 and {u: items(r, u) for u in OTHERS} == kept


def test_delete_before_keeps_exactly_the_newer_events(tmp_path):
    store = tmp_path / "s"
    with open_store(store) as w:
        fill(w)
        w.append(VICTIM, ev(10, 3, act="late"))  # late events, in the memtable
        everything = w.read(VICTIM)
        reader = SeqVault.open(store, read_only=True, refresh_interval=3600)
        cut = 40
        want = {k: a[everything["ts"] >= cut].tolist() for k, a in everything.items()}
        n_old = int((everything["ts"] < cut).sum())
        assert w.delete(VICTIM, before=cut) == n_old
        assert w.read(VICTIM).to_dict() == want
        reader.refresh()
        assert reader.read(VICTIM).to_dict() == want
        assert w.delete(VICTIM, before=cut) == 0  # nothing older left: a no-op
        st = w.stats()
        assert (st["deleted_users"], st["deleted_events"]) == (0, n_old)
        w.append(VICTIM, ev(200, 2))
        want = {k: want[k] + v for k, v in
                {"ts": [200, 201], "item": [2000, 2010], "act": ["v", "v"]}.items()}
        assert w.read(VICTIM).to_dict() == want
        reader.close()
        w.close(flush=False)
    with SeqVault.open(store) as v:
        assert v.read(VICTIM).to_dict() == want
        v.merge()
        assert v.read(VICTIM).to_dict() == want
        assert v.verify()["ok"]


def test_delete_of_an_unknown_user_is_a_no_op(tmp_path):
    with open_store(tmp_path / "s") as v:
        v.append("a", ev(0, 3))
        seq = v.seq
        assert v.delete("nobody") == 0
        assert v.delete("nobody", before=10) == 0
        assert v.seq == seq  # nothing committed
        assert v.stats()["deleted_users"] == 0
        with pytest.raises(Exception, match="before"):
            v.delete("a", before="soon")


def test_a_deleted_user_can_come_back_with_new_events(tmp_path):
    store = tmp_path / "s"
    with open_store(store) as v:
        fill(v)
        v.delete(VICTIM)
        v.append(VICTIM, ev(500, 4))
        assert items(v, VICTIM) == [5000, 5010, 5020, 5030]
        assert v.stats()["users"] == len(OTHERS) + 1
        v.merge()
        assert items(v, VICTIM) == [5000, 5010, 5020, 5030]
    with SeqVault.open(store) as v:
        assert items(v, VICTIM) == [5000, 5010, 5020, 5030]


def test_read_only_open_refuses_delete(tmp_path):
    store = tmp_path / "s"
    with open_store(store) as v:
        v.append("a", ev(0, 3))
        with SeqVault.open(store, read_only=True) as r:
            with pytest.raises(Exception, match="read_only"):
                r.delete("a")


CHILD = r"""
import json, sys
import numpy as np
from seqvault import Schema, SeqVault
v = SeqVault.open(sys.argv[1], schema=Schema.from_dict({schema!r}), durability="sync",
                  tail_events=64)
def ev(s, n):
    return {{"ts": np.arange(s, s + n), "item": np.arange(s, s + n) * 10, "act": ["v"] * n}}
users = {users!r}
for s in (0, 15):
    for u in users:
        v.append(u, ev(s, 15))
    v.flush()
v.merge()
for u in users:
    v.append(u, ev(30, 20))
v.flush()
for u in users:
    v.append(u, ev(50, 5))
print(json.dumps(["filled"]), flush=True)
v.delete(users[1], before=40)
print(json.dumps(["cut", users[1]]), flush=True)
v.delete(users[0])
print(json.dumps(["deleted", users[0]]), flush=True)
v.merge()
print(json.dumps(["merged"]), flush=True)
v.close()
"""


# @2: the second time, i.e. in the merge after the deletes (the setup merges once before).
@pytest.mark.parametrize("fault", ["delete:after_write", "delete:after_commit",
                                   "delete:after_commit@2", "purge:after_rotate",
                                   "merge:after_write@2", "merge:after_commit@2",
                                   "reclaim:after_drop_commit@2", "reclaim:after_unlink@2",
                                   "purge:after_commit"])
def test_sigkill_at_every_step_of_a_delete(tmp_path, fault):
    store = tmp_path / "s"
    users = [VICTIM, "cut-me", *OTHERS[:3]]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{FAULT_ENV: fault})
    proc = subprocess.run([sys.executable, "-c", CHILD.format(schema=SCHEMA, users=users),
                           str(store)], capture_output=True, env=env, timeout=120)
    done = [json.loads(line)[0] for line in proc.stdout.decode().splitlines()]
    assert proc.returncode == -signal.SIGKILL, (fault, done, proc.stderr.decode())
    assert "filled" in done, (fault, done)  # killed in a delete or in the purging merge
    if fault.startswith(("merge", "reclaim", "purge")):
        assert "deleted" in done, (fault, done)
    full = list(range(0, 550, 10))
    with SeqVault.open(store) as v:
        assert v.verify()["ok"]
        for u in OTHERS[:3]:
            assert items(v, u) == full, (u, fault)
        if "filled" in done:  # past the setup: the deletes may or may not have committed
            cut = items(v, "cut-me")
            assert cut in (full, full[40:]), fault
            assert cut == full[40:] or "cut" not in done
            gone = items(v, VICTIM)
            assert gone in (full, []), fault
            assert gone == [] or "deleted" not in done
            if gone == []:  # finish the purge: the bytes go
                v.merge()
                assert files_holding(store, VICTIM.encode()) == []
        assert v.delete(VICTIM) in (0, len(full))
        v.merge()
        assert len(v.read(VICTIM)) == 0
        for u in OTHERS[:3]:
            assert items(v, u) == full
    assert files_holding(store, VICTIM.encode()) == []


def test_no_user_key_outlives_a_delete_in_lmdb_after_many_partial_seals(tmp_path):
    # "Sealed through" records name users by hash only: LMDB keeps freed pages' old bytes until
    # it reuses them, so a key written there would outlive the delete (it did, with the key in
    # the record: 200 partial seals left it in meta/data.mdb after the purge).
    store = tmp_path / "s"
    with SeqVault.open(store, schema=Schema.from_dict(SCHEMA), tail_events=8) as v:
        for r in range(200):
            v.append(VICTIM, ev(r * 10, 9))  # a partial seal each time
            for u in OTHERS:
                v.append(u, ev(r * 10, 1))
        assert v.stats()["tail_seals"] >= 200
        v.delete(VICTIM)
        v.merge()
        assert files_holding(store, VICTIM.encode()) == []
        assert all(len(v.read(u)) == 200 for u in OTHERS)
    assert files_holding(store, VICTIM.encode()) == []


def test_a_merge_copying_the_user_while_it_is_deleted_leaves_no_copy(tmp_path, monkeypatch):
    # The merge pass rewrites the user outside the store lock; the delete commits in between;
    # the pass's compare-and-swap then skips the user, and its copy (garbage in the merger's
    # file) joins the purge set, so the next pass removes it.
    from seqvault import merge_work

    store = tmp_path / "s"
    with open_store(store) as v:
        for start in (0, 40):  # two rt segments each: merged in the same batch, same file
            v.append(VICTIM, ev(start, 15))
            v.append(OTHERS[0], ev(start, 40))
            v.flush()
        for u in OTHERS[1:]:
            v.append(u, ev(0, 5))
        v.flush()
        rebuild = merge_work.rebuild_user
        hits = []

        def delete_then_rebuild(*args, **kw):
            # after the snapshot, before the copy is written (the merge job of the batch, in
            # this process: merge() defaults to worker="thread")
            if not hits:
                hits.append(v.delete(VICTIM))
            return rebuild(*args, **kw)

        monkeypatch.setattr(merge_work, "rebuild_user", delete_then_rebuild)
        first = v.merge()
        monkeypatch.undo()
        assert hits == [30] and first["users_skipped"] == 1
        assert len(v.read(VICTIM)) == 0
        v.merge()
        assert files_holding(store, VICTIM.encode()) == []
        assert len(v.read(OTHERS[0])) == 80
        assert all(len(v.read(u)) == 5 for u in OTHERS[1:])


READER = r"""
import sys
from seqvault import SeqVault
r = SeqVault.open(sys.argv[1], read_only=True, refresh_interval=3600)
for line in sys.stdin:  # one line per question: refresh, then print the victim's count
    r.refresh()
    print(len(r.read(sys.argv[2])), len(r.read(sys.argv[3])), flush=True)
"""


def test_a_reader_in_another_process_sees_the_delete_after_refresh(tmp_path):
    store = tmp_path / "s"
    with open_store(store) as w:
        fill(w)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-c", READER, str(store), VICTIM, OTHERS[0]],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env)
        try:
            assert proc.stdin is not None and proc.stdout is not None

            def ask() -> str:
                proc.stdin.write("?\n")
                proc.stdin.flush()
                return proc.stdout.readline().strip()

            assert ask() == "125 55"
            w.delete(VICTIM)
            assert ask() == "0 55"  # the memtable tail dropped, the index entry empty
            w.merge()  # the log rotates and files go: the reader follows
            assert ask() == "0 55"
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=60)
