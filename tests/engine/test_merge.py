"""Lifetime merge, retention and space reclamation (issue 3; docs/design/merge.md)."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from seqvault import CorruptionError, Schema, SeqVault
from seqvault.files import parse_file_name
from seqvault.reclaim import file_usage, live_bytes

from ..conftest import SCHEMA_DICT, make_events


def _fill(v: SeqVault, rng: np.random.Generator, users: range, rounds: int, n: int = 30,
          late: bool = False) -> None:
    for r in range(rounds):
        for u in users:
            t0 = 1_000_000 + r * 5_000 - (20_000 if late and u % 3 == 0 else 0)
            v.append(u, make_events(rng, n, t0=t0, span=4_000))
        v.flush()


def _snapshot(v: SeqVault, users: range) -> dict[int, dict]:
    return {u: v.read(u).to_dict() for u in users}


def _data_files(v: SeqVault) -> set[str]:
    return {p.name for p in (v.path / "data").iterdir() if parse_file_name(p.name)}


def test_merge_folds_rt_into_lt_and_reads_are_unchanged(tmp_path, schema):
    rng = np.random.default_rng(1)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none",
                       lifetime_segment_events=64) as v:
        _fill(v, rng, range(12), rounds=5, late=True)
        v.append(3, make_events(rng, 7))  # unflushed tail: merge leaves the memtable alone
        before = _snapshot(v, range(12))
        segs_before = v.stats()["segments"]
        res = v.merge()
        json.dumps(res)  # JSON-able summary
        assert res["users_merged"] == 12 and res["events_in"] == res["events_out"] == 12 * 150
        assert _snapshot(v, range(12)) == before
        st = v.stats()
        assert st["segments"] < segs_before
        assert st["files"]["rt"] == 0 and st["files"]["lt"] >= 1  # the rt file was reclaimed
        assert all(n.startswith("lt-") for n in _data_files(v))
        # every user now holds only lifetime extents, sorted and time-disjoint
        kinds = {fid: info.kind for fid, info in v.catalog.items()}
        for u in range(12):
            ext = v.index.extents_of(_hash(u))
            assert all(kinds[e.file] == "lt" for e in ext)
            old_first = list(reversed(ext))
            assert all(a.max_ts <= b.min_ts for a, b in zip(old_first, old_first[1:]))
        # a second merge has nothing to do
        again = v.merge()
        assert again["users_merged"] == 0 and again["bytes_written"] == 0
    with SeqVault.open(tmp_path / "s") as v:
        assert _snapshot(v, range(12)) == before


def test_ties_keep_arrival_order_across_merges(tmp_path, schema):
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none",
                       lifetime_segment_events=8) as v:
        expect = []
        for r in range(6):
            ts = [50] * 5 + [10 * r]
            items = [r * 100 + i for i in range(6)]
            v.append(7, {"ts": ts, "item_id": items, "action": ["view"] * 6, "dwell": [0] * 6,
                         "score": [0.0] * 6, "liked": [False] * 6})
            expect += list(zip(ts, items))
            v.flush()
            if r % 2:
                v.merge()
        got = v.read(7)
        want = sorted(expect, key=lambda p: p[0])  # stable: arrival order for ties
        assert list(zip(got["ts"].tolist(), got["item_id"].tolist())) == want


def test_merge_only_named_users(tmp_path, schema):
    rng = np.random.default_rng(2)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v:
        _fill(v, rng, range(6), rounds=3)
        res = v.merge(users=[1, 2, 999], reclaim=False)
        assert res["users_merged"] == 2
        assert v.stats()["files"]["rt"] == 1  # others still have rt extents


def test_retention_max_events_dropped_by_merge_and_counted(tmp_path):
    s = Schema.from_dict({**SCHEMA_DICT, "retention": {"max_events": 40}})
    rng = np.random.default_rng(3)
    with SeqVault.open(tmp_path / "s", schema=s, durability="none") as v:
        _fill(v, rng, range(4), rounds=3, n=25, late=True)
        before = _snapshot(v, range(4))
        before_b = {u: v.read(u, before=1_005_000).to_dict() for u in range(4)}
        assert all(len(b["ts"]) == 40 for b in before.values())
        res = v.merge()
        assert res["retention_dropped"]["max_events"] == 4 * (75 - 40)
        assert _snapshot(v, range(4)) == before
        assert {u: v.read(u, before=1_005_000).to_dict() for u in range(4)} == before_b
        assert v.stats()["sealed_events"] == 4 * 40
        assert v.stats()["retention_dropped_by_count"] == 140
    with SeqVault.open(tmp_path / "s", read_only=True) as r:  # persisted
        assert r.stats()["retention_dropped_events"] == 140


def test_retention_max_age(tmp_path):
    s = Schema.from_dict({**SCHEMA_DICT, "retention": {"max_age": "1d"}})
    now = int(time.time() * 1000)
    rng = np.random.default_rng(4)
    # Writes refuse events already outside the window (docs/design/safety.md): write under a
    # longer max_age, then shrink it (an online schema change), as time passing would.
    wide = Schema.from_dict({**SCHEMA_DICT, "retention": {"max_age": "7d"}})
    with SeqVault.open(tmp_path / "s", schema=wide, durability="none") as v:
        old = make_events(rng, 10, t0=now - 3 * 86_400_000, span=1000)
        new = make_events(rng, 10, t0=now - 3_600_000, span=1000)
        v.append(1, old)
        v.append(1, new)
        v.evolve_schema(s)
        v.flush()
        assert len(v.read(1)) == 10  # reads already hide the old ones
        res = v.merge()
        assert res["retention_dropped"]["max_age"] == 10
        assert v.stats()["sealed_events"] == 10
        assert v.stats()["retention_dropped_by_age"] == 10
        assert sorted(v.read(1)["ts"].tolist()) == sorted(new["ts"].tolist())


def test_flush_during_merge_is_kept_compare_and_swap(tmp_path, schema):
    """A flush between snapshot and publish prepends rt extents: they survive the publish."""
    rng = np.random.default_rng(5)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v:
        _fill(v, rng, range(3), rounds=2)
        m = v._get_merger()
        extra = make_events(rng, 9, t0=2_000_000)

        def hook(point: str) -> None:
            if point == "merge:after_sync":
                v.append(1, extra)
                v.flush()

        m.fault = hook  # type: ignore[assignment]
        want = {u: v.read(u).to_dict() for u in range(3)}
        res = v.merge(reclaim=False)
        assert res["users_merged"] == 3
        got = v.read(1)
        assert len(got) == 60 + 9
        assert got["ts"][-9:].tolist() == sorted(extra["ts"].tolist())
        for u in (0, 2):
            assert v.read(u).to_dict() == want[u]


def test_user_replaced_during_merge_is_skipped(tmp_path, schema):
    rng = np.random.default_rng(6)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v:
        _fill(v, rng, range(3), rounds=2)
        m = v._get_merger()

        def hook(point: str) -> None:
            if point == "merge:after_sync":
                m.fault = lambda p: None  # type: ignore[assignment]
                with v.bulk_writer() as bw:  # replaces user 2's whole list
                    ev = make_events(rng, 5, t0=3_000_000)
                    ts, cols = np.asarray(ev.pop("ts")), ev
                    from seqvault.validate import validate_events

                    ts, cols = validate_events(v.schema, {"ts": ts, **cols})
                    bw.add(2, ts, cols)

        m.fault = hook  # type: ignore[assignment]
        want2 = None
        res = v.merge(reclaim=False)
        assert res["users_skipped"] == 1 and res["users_merged"] == 2
        want2 = v.read(2)
        assert len(want2) == 65


def test_reclaim_deletes_mostly_garbage_lt_files(tmp_path, schema):
    rng = np.random.default_rng(7)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none",
                       lifetime_segment_events=64, max_file_bytes=20_000) as v:
        for _ in range(6):  # each round rewrites every user's newest lt segment
            _fill(v, rng, range(10), rounds=1, n=20)
            v.merge()
        before = _snapshot(v, range(10))
        usage = file_usage(v)  # no other thread touches the store here: no lock needed
        # no sealed (inactive) file is left below the reclaim ratio
        assert all(f["live_ratio"] >= 0.5 for f in usage if not f["active"]), usage
        assert _snapshot(v, range(10)) == before
        st = v.stats()
        assert st["reclaimed_files"] >= 2
        assert st["garbage_bytes"] <= st["data_bytes"] // 2 + 20_000
        on_disk = _data_files(v)
        assert on_disk == {f"{info.kind}-{fid:08d}.svx" for fid, info in v.catalog.items()
                           if info.size > 0} | (on_disk & {f"lt-{fid:08d}.svx"
                                                              for fid in v.catalog})
    with SeqVault.open(tmp_path / "s") as v:
        assert _snapshot(v, range(10)) == before


def test_live_bytes_equal_sum_of_extents(tmp_path, schema):
    rng = np.random.default_rng(8)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v:
        _fill(v, rng, range(20), rounds=3)
        v.merge(users=range(10), reclaim=False)
        expect: dict[int, int] = {}
        for row in v.index.rows():
            for e in v.index.extents(row):
                expect[e.file] = expect.get(e.file, 0) + e.length
        assert live_bytes(v.index) == expect


def test_stale_snapshot_read_retries_after_file_deleted(tmp_path, schema):
    """A reader process whose snapshot predates a reclamation opens a deleted file lazily:
    ENOENT → it takes a new snapshot and answers correctly."""
    rng = np.random.default_rng(9)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as w:
        _fill(w, rng, range(5), rounds=2)
        r = SeqVault.open(tmp_path / "s", read_only=True, refresh_interval=3600)
        try:
            want = _snapshot(w, range(5))
            rt_files = {fid for fid, i in w.catalog.items() if i.kind == "rt"}
            w.merge()
            assert not (rt_files & set(w.catalog))  # rt file deleted
            for fid in rt_files:
                assert not w.files.path(fid).exists()
            assert r.seq < w.seq  # the reader did not refresh ...
            assert _snapshot(r, range(5)) == want  # ... but reads retry on a new snapshot
            assert not (rt_files & set(r.catalog))
        finally:
            r.close()


def _open_fds(path) -> int:
    """How many of this process's descriptors point at `path` (deleted or not), per the OS."""
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):
        pytest.skip("needs /proc/self/fd")
    n = 0
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        n += target in (str(path), f"{path} (deleted)")
    return n


def test_reader_with_open_fd_keeps_reading_then_closes_it(tmp_path, schema):
    rng = np.random.default_rng(10)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as w:
        _fill(w, rng, range(5), rounds=2)
        r = SeqVault.open(tmp_path / "s", read_only=True, refresh_interval=3600)
        try:
            rt = next(fid for fid, i in r.catalog.items() if i.kind == "rt")
            rt_path = w.files.path(rt)
            writer_fds = _open_fds(rt_path)
            want = _snapshot(r, range(5))  # opens the rt file's fd
            assert _open_fds(rt_path) == writer_fds + 1
            w.merge()
            assert not rt_path.exists()
            assert _snapshot(r, range(5)) == want  # stale snapshot, fd still valid
            r.refresh()
            assert _open_fds(rt_path) == 0 and rt not in r.catalog  # fd closed: space freed
            assert _snapshot(r, range(5)) == want
        finally:
            r.close()


def test_corrupt_segment_stops_merge_and_keeps_data(tmp_path, schema):
    rng = np.random.default_rng(11)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v:
        _fill(v, rng, range(4), rounds=2)
        v.merge(users=[0])
        e = v.index.extents_of(_hash(3))[0]
        path = v.files.path(e.file)
        files_before = _data_files(v)
        good = {u: v.read(u).to_dict() for u in (0, 1, 2)}
    with open(path, "r+b") as fh:  # flip a byte in the data of user 3's newest segment
        fh.seek(e.off + e.length - 3)
        b = fh.read(1)
        fh.seek(e.off + e.length - 3)
        fh.write(bytes([b[0] ^ 0xFF]))
    with SeqVault.open(tmp_path / "s") as v:
        with pytest.raises(CorruptionError) as exc:
            v.merge()
        assert str(path.name) in str(exc.value) and "user 3" in str(exc.value)
        assert exc.value.user == 3
        assert _data_files(v) >= files_before  # nothing deleted
        for u in good:
            if u != 3:
                assert v.read(u).to_dict() == good[u]
        with pytest.raises(CorruptionError):
            v.read(3)


def test_string_column_added_later_merges_with_default(tmp_path, schema):
    rng = np.random.default_rng(12)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none") as v:
        _fill(v, rng, range(3), rounds=2)
        d = json.loads(v.schema.to_json())
        d["columns"].append({"name": "channel", "type": "string", "default": "home"})
        v.evolve_schema(Schema.from_dict(d))
        ev = make_events(rng, 4, t0=2_000_000)
        ev["channel"] = ["push"] * 4
        v.append(1, ev)
        v.flush()
        r = SeqVault.open(tmp_path / "s", read_only=True)
        try:
            want = _snapshot(v, range(3))
            v.merge()
            assert _snapshot(v, range(3)) == want
            assert _snapshot(r, range(3)) == want
            v.append(2, {**make_events(rng, 3, t0=3_000_000), "channel": ["mail"] * 3})
            r.refresh()
            assert r.read(2)["channel"].tolist()[-3:] == ["mail"] * 3
        finally:
            r.close()


def test_auto_merge_runs_in_background_and_stops_on_close(tmp_path, schema):
    rng = np.random.default_rng(13)
    threads_before = set(threading.enumerate())
    v = SeqVault.open(tmp_path / "s", schema=schema, durability="none", auto_merge=True,
                      merge_interval=0.02)
    try:
        _fill(v, rng, range(8), rounds=4)
        want = _snapshot(v, range(8))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (v.stats()["files"]["rt"]
                                               or not v.stats()["merge_passes"]):
            time.sleep(0.02)
        st = v.stats()
        assert st["auto_merge"] and st["merge_passes"] >= 1 and st["files"]["rt"] == 0
        assert _snapshot(v, range(8)) == want
        started = set(threading.enumerate()) - threads_before  # the background merger
    finally:
        v.close()
    assert started and not any(t.is_alive() for t in started)
    with SeqVault.open(tmp_path / "s") as v:
        assert _snapshot(v, range(8)) == want


def test_backpressure_waits_for_merge(tmp_path, schema):
    """With a backlog limit of 2 flushes, appends that flush often still end with the
    backlog bounded (the append waited for a pass)."""
    rng = np.random.default_rng(14)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none", auto_merge=True,
                       merge_interval=0.01, merge_backpressure_flushes=2, tail_events=10,
                       merge_trigger_flushes=1) as v:
        worst = 0
        for i in range(40):
            v.append(i % 4, make_events(rng, 12))  # every append flushes
            worst = max(worst, v.stats()["merge_backlog_flushes"])
        assert worst <= 3  # the flushing append itself may add one on top of the limit
        assert v.stats()["merge_passes"] >= 5


def _hash(u: int) -> int:
    from seqvault.index import user_hash
    from seqvault.segment import key_bytes

    return user_hash(key_bytes(u)[1])


def test_idle_compaction_brings_garbage_under_ten_percent(tmp_path, schema):
    rng = np.random.default_rng(15)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none",
                       lifetime_segment_events=64) as v:
        for _ in range(5):
            _fill(v, rng, range(10), rounds=1, n=20)
            v.merge()
            _fill(v, rng, range(0, 10, 2), rounds=1, n=20)  # half the users: garbage stays
            v.merge()
        st = v.stats()
        want = _snapshot(v, range(10))
    assert st["garbage_bytes"] > 0.1 * st["data_bytes"], st  # the busy state has garbage
    with SeqVault.open(tmp_path / "s", auto_merge=True, merge_interval=0.01) as v:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not v.stats()["merge_passes"]:
            time.sleep(0.02)
        st = v.stats()
        assert st["garbage_bytes"] <= 0.1 * st["data_bytes"], st
        assert _snapshot(v, range(10)) == want


def test_reader_threads_in_the_writer_process_during_rewrites(tmp_path, schema):
    """Threads of the writer process read while merge rewrites every file and deletes the old
    ones (reclaim_ratio above 1 makes every file a candidate): every read equals the data."""
    rng = np.random.default_rng(16)
    with SeqVault.open(tmp_path / "s", schema=schema, durability="none",
                       lifetime_segment_events=32, max_file_bytes=6_000) as v:
        _fill(v, rng, range(12), rounds=3, late=True)
        v.merge()
        want = _snapshot(v, range(12))
        errors: list[str] = []
        stop = threading.Event()
        reads = [0]

        def reader(seed: int) -> None:
            r = np.random.default_rng(seed)
            while not stop.is_set():
                u = int(r.integers(0, 12))
                try:
                    got = v.read(u).to_dict()
                    if got != want[u]:
                        errors.append(f"user {u}: wrong answer")
                except Exception as exc:
                    errors.append(f"user {u}: {exc!r}")
                reads[0] += 1

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        deleted = 0
        try:
            for _ in range(8):
                res = v.merge(reclaim_ratio=1.01)
                deleted += res["files_reclaimed"]
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert errors == []
        assert deleted >= 8 and reads[0] > 0
        assert _snapshot(v, range(12)) == want
