"""The merge process (merge_worker = "process"; docs/design/merge.md, "The merge process"):
the same bytes as the in-process merge, concurrent appends/seals/deletes kept by the
compare-and-swap publish, a dying or failing process reported and retried, close() stopping
it, and progress callbacks that reach their totals."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from seqvault import MergeFailed, SeqVault
from seqvault.faults import FAULT_ENV
from seqvault.index import user_hash
from seqvault.segment import key_bytes

from ..conftest import make_events


def _hash(u: int) -> int:
    return user_hash(key_bytes(u)[1])


def _fill(v: SeqVault, seed: int, users: range, rounds: int) -> None:
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        for u in users:
            late = 20_000 if (u + r) % 3 == 0 else 0  # late events overlap older segments
            v.append(u, make_events(rng, 20 + u % 7, t0=1_000_000 + r * 5_000 - late,
                                    span=4_000))
        v.flush()


def _segments(v: SeqVault, users: range) -> dict[int, list[bytes]]:
    """Every user's segment bytes, newest first (what the merge wrote, byte for byte)."""
    return {u: [v.files.pread(e.file, e.off, e.length) for e in v.index.extents_of(_hash(u))]
            for u in users}


def _reads(v: SeqVault, users: range) -> dict[int, dict]:
    return {u: v.read(u).to_dict() for u in users}


def test_process_merge_equals_thread_merge_event_for_event(tmp_path, schema):
    """Two identical stores, one merged in this process, one by the merge process: the same
    summaries, reads and segment bytes, also across output files that fill up (small
    max_file_bytes) and a reclamation pass."""
    users = range(15)
    out = {}
    for worker in ("thread", "process"):
        with SeqVault.open(tmp_path / worker, schema=schema, durability="none",
                           lifetime_segment_events=32, max_file_bytes=6_000,
                           merge_batch_users=4) as v:
            _fill(v, 1, users, rounds=3)
            before = _reads(v, users)
            first = v.merge(worker=worker)
            _fill(v, 2, range(0, 15, 2), rounds=2)
            second = v.merge(worker=worker, reclaim_ratio=0.9)
            assert _reads(v, range(1, 15, 2)) == {u: before[u] for u in range(1, 15, 2)}
            out[worker] = (first, second, _reads(v, users), _segments(v, users),
                           sorted((fid, i.size) for fid, i in v.catalog.items()),
                           v.verify()["ok"])
    t, p = out["thread"], out["process"]
    skip = ("seconds", "events_per_s", "worker")
    for a, b in ((t[0], p[0]), (t[1], p[1])):
        assert {k: x for k, x in a.items() if k not in skip} == \
            {k: x for k, x in b.items() if k not in skip}
    assert t[0]["events_in"] > 0 and t[0]["files_reclaimed"] >= 1
    assert t[2] == p[2] and t[3] == p[3]  # reads and segment bytes
    assert t[4] == p[4]  # the same files with the same sizes
    assert t[5] and p[5]


def test_appends_seals_and_deletes_while_the_process_merges_are_kept(tmp_path, schema):
    """While the merge process works on a batch (the writer waits at merge_proc:running):
    user 1 gets new events and a flush, user 2 is deleted, user 3 gets a seal of its tail.
    The publish keeps all of it: nothing lost, the deleted user not resurrected."""
    rng = np.random.default_rng(5)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none",
                       tail_events=64) as v:
        _fill(v, 3, range(5), rounds=2)
        want = _reads(v, range(5))
        extra = make_events(rng, 9, t0=2_000_000)
        sealed = make_events(rng, 70, t0=2_100_000)  # > tail_events: sealed on its own
        m = v._get_merger()
        fired = []

        def hook(point: str) -> None:
            if point == "merge_proc:running" and not fired:
                fired.append(point)
                v.append(1, extra)
                v.flush()
                assert v.delete(2) > 0
                v.append(3, sealed)

        m.fault = hook  # type: ignore[assignment]
        res = v.merge(worker="process", reclaim=False)
        assert fired and res["users_skipped"] == 1  # user 2: its list changed (deleted)
        assert res["users_merged"] == 4

        def check(x: SeqVault) -> None:
            got1 = x.read(1)
            assert len(got1) == len(want[1]["ts"]) + 9
            assert got1["ts"][-9:].tolist() == sorted(extra["ts"].tolist())
            assert len(x.read(2)) == 0
            got3 = x.read(3)
            assert got3["ts"][-70:].tolist() == sorted(sealed["ts"].tolist())
            for u in (0, 4):
                assert x.read(u).to_dict() == want[u]

        check(v)
        v.merge(worker="process")  # the purge of user 2, by the merge process too
        check(v)
        assert v.stats()["delete_pending_files"] == 0
    with SeqVault.open(tmp_path / "s") as v:
        check(v)


def test_appends_from_threads_during_background_process_merges(tmp_path, schema):
    """Real concurrency: two threads append (and so flush) while the background merger runs
    passes in the merge process; at the end every event is there once, in order."""
    users = range(6)
    sent: dict[int, list[int]] = {u: [] for u in users}
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none", auto_merge=True,
                       merge_interval=0.01, memtable_events=200, merge_batch_users=2) as v:
        def writer(seed: int, mine: range) -> None:
            rng = np.random.default_rng(seed)
            for i in range(60):
                u = int(mine[i % len(mine)])
                ev = make_events(rng, 5, t0=1_000_000 + i * 100, span=50)
                ev["item_id"] = np.arange(5) + 1000 * i + 100_000 * u
                v.append(u, ev)
                sent[u] += ev["item_id"].tolist()

        ts = [threading.Thread(target=writer, args=(s, r))
              for s, r in ((1, range(0, 3)), (2, range(3, 6)))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        v.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (v.stats()["files"]["rt"]
                                               or v.stats()["merge_backlog_flushes"]):
            time.sleep(0.02)
        st = v.stats()
        assert st["merge_passes"] >= 1 and st["merge_process_starts"] >= 1, st
        assert st["auto_merge_error"] is None and st["merge_process_failures"] == 0, st
        for u in users:
            assert sorted(v.read(u)["item_id"].tolist()) == sorted(sent[u])
    with SeqVault.open(tmp_path / "s") as v:
        for u in users:
            got = v.read(u)["item_id"].tolist()
            assert sorted(got) == sorted(sent[u]) and len(got) == len(set(got))


def test_a_merge_process_that_dies_is_reported_and_nothing_is_published(tmp_path, schema,
                                                                        monkeypatch):
    """SIGKILL of the merge process mid-batch (fault merge_proc:after_write): merge() raises
    MergeFailed naming the signal, the store reads as before, no unpublished bytes stay,
    and the next merge (a new process) works."""
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v:
        _fill(v, 7, range(6), rounds=3)
        want = _reads(v, range(6))
        sizes = {fid: i.size for fid, i in v.catalog.items()}
        monkeypatch.setenv(FAULT_ENV, "merge_proc:after_write")  # read by the child only
        with pytest.raises(MergeFailed, match="signal 9"):
            v.merge(worker="process")
        assert _reads(v, range(6)) == want
        on_disk = {p.name: p.stat().st_size for p in (v.path / "data").iterdir()}
        for fid, info in v.catalog.items():
            assert fid in sizes or info.size == 0
        assert all(on_disk.get(v.files.path(fid).name, 0) == size
                   for fid, size in sizes.items()), "bytes past a published size"
        monkeypatch.delenv(FAULT_ENV)
        res = v.merge(worker="process")
        assert res["users_merged"] == 6 and v.verify()["ok"]
        assert _reads(v, range(6)) == want
        assert v.stats()["merge_process_starts"] == 2


def test_background_merger_retries_after_the_process_dies(tmp_path, schema, monkeypatch):
    """Every merge process dies at its first batch while the fault is set: the background
    merger counts the failures and backs off (the writer keeps appending); once the fault
    is gone, a new process merges everything."""
    monkeypatch.setenv(FAULT_ENV, "merge_proc:after_sync")
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none", auto_merge=True,
                       merge_interval=0.01) as v:
        _fill(v, 9, range(5), rounds=2)
        want = _reads(v, range(5))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and v.stats()["merge_process_failures"] < 2:
            time.sleep(0.02)
        st = v.stats()
        assert st["merge_process_failures"] >= 2 and "died" in st["merge_process_last_failure"]
        assert st["auto_merge"] and st["files"]["rt"] >= 1  # nothing merged, still running
        v.append(0, make_events(np.random.default_rng(1), 3, t0=9_000_000))  # writes go on
        want[0] = v.read(0).to_dict()
        monkeypatch.delenv(FAULT_ENV)  # the next process is started without it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and v.stats()["files"]["rt"]:
            time.sleep(0.02)
        st = v.stats()
        assert st["files"]["rt"] == 0 and st["merge_process_starts"] >= 3, st
        assert _reads(v, range(5)) == want


def test_close_stops_the_merge_process_mid_batch(tmp_path, schema):
    """close() while the merge process works on a batch: it is killed (close does not wait for
    the batch), nothing of the batch is published, and the store reopens intact."""
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v0:
        _fill(v0, 11, range(6), rounds=3)
        want = _reads(v0, range(6))
    v = SeqVault.open(tmp_path / "s", auto_merge=True, merge_interval=0.01)
    m = v._get_merger()
    busy = threading.Event()
    pid: list[int | None] = []

    def hook(point: str) -> None:
        if point == "merge_proc:running":
            pid.append(m.process_pid())
            busy.set()
            time.sleep(0.5)  # the child works; close() comes now

    m.fault = hook  # type: ignore[assignment]
    v.append(0, make_events(np.random.default_rng(2), 2, t0=9_000_000))
    v.flush()  # a flush: the background merger starts a pass
    want[0] = v.read(0).to_dict()
    assert busy.wait(60)
    v.close()
    assert pid and pid[0] is not None
    assert not Path(f"/proc/{pid[0]}").exists() or _zombie_or_gone(pid[0])
    with SeqVault.open(tmp_path / "s") as v:
        assert _reads(v, range(6)) == want
        assert v.verify()["ok"]


def _zombie_or_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] in ("Z", "X")
    except OSError:
        return True


def test_progress_callback_counts_reach_the_totals(tmp_path, schema):
    """merge(progress=...) reports after every batch and ends at done == total == the users
    it considered; verify(update) ends at every user."""
    for worker in ("thread", "process"):
        calls: list[tuple[str, int, int]] = []
        with SeqVault.open(tmp_path / worker, schema=schema, durability="none",
                           merge_batch_users=3) as v:
            _fill(v, 13, range(10), rounds=2)
            res = v.merge(worker=worker, progress=lambda *a, c=calls: c.append(a))
            merge_calls = [c for c in calls if c[0] == "merge"]
            assert len(merge_calls) == 4  # ceil(10 / 3) batches
            assert [c[1] for c in merge_calls] == [3, 6, 9, 10]
            assert merge_calls[-1][1] == merge_calls[-1][2] == res["users_considered"] == 10
            seen: list[tuple[str, int, int]] = []
            v.verify(lambda *a, s=seen: s.append(a))
            assert seen[-1] == ("verify", 10, 10)


def test_merge_worker_setting_is_validated(tmp_path, schema):
    from seqvault.errors import SettingsError

    with pytest.raises(SettingsError, match="merge_worker"):
        SeqVault.open(tmp_path / "s", schema=schema, merge_worker="fork")
    with SeqVault.open(tmp_path / "s", schema=schema, merge_worker="thread") as v:
        assert v.settings["merge_worker"] == "thread"
        with pytest.raises(ValueError, match="merge worker"):
            v.merge(worker="fork")
    assert os.environ.get(FAULT_ENV) is None


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_merge_of_named_users_also_purges_deleted_users(tmp_path, worker):
    """merge(users=[...]) finishes the purge whatever users it names (docs/design/safety.md
    §6): the deleted user's key is in no file of the store afterwards, nothing is pending,
    and the users it did not name read as before."""
    from .test_delete import OTHERS, VICTIM, files_holding, fill, items, open_store

    store = tmp_path / "s"
    with open_store(store) as v:
        kept = fill(v)
        v.delete(VICTIM)
        assert files_holding(store, VICTIM.encode())
        summary = v.merge(users=[OTHERS[0]], worker=worker)
        assert summary["purge_pending_files"] == 0 and summary["purge_pending_logs"] == 0
        st = v.stats()
        assert st["delete_pending_files"] == 0 and st["delete_pending_logs"] == 0
        assert {u: items(v, u) for u in OTHERS} == kept
        assert len(v.read(VICTIM)) == 0
    assert files_holding(store, VICTIM.encode()) == []
