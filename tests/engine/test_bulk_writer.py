"""BulkWriter used directly (not through ingest): `with vault.bulk_writer() as bw: bw.add(...)`.
Commit publishes every user at once; an abort or an exception leaves the store exactly as it
was (reads, stats, data files); new events merge with stored ones, ties in arrival order; a
reopened store sees the result."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from seqvault import SeqVault, StoreClosed

from ..conftest import expected_order, make_events

USERS = list(range(1, 7))


def split(ev: dict) -> tuple[np.ndarray, dict]:
    """(ts, columns) as BulkWriter.add takes them: numpy arrays, strings as str objects."""
    return np.asarray(ev["ts"], dtype=np.int64), {
        k: np.array(v, dtype=object) if isinstance(v, list) else np.asarray(v)
        for k, v in ev.items() if k != "ts"}


def snapshot(v: SeqVault, users=USERS) -> dict:
    v.refresh()  # a read-only handle picks up the writer's newest commit now (no-op for writers)
    return {u: v.read(u).to_dict() for u in users}


def data_files(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted((path / "data").iterdir())}


def comparable_stats(v: SeqVault) -> dict:
    s = v.stats()
    # operation counters and this process's read cache, not the stored state
    for counter in ("wal_fsyncs", "reads", "read_cache_bytes", "read_cache_segments",
                    "read_cache_hits", "read_cache_misses"):
        s.pop(counter, None)
    return s


@pytest.fixture
def store(tmp_path, schema):
    """A store holding sealed events for users 1..3 and nothing for 4..6."""
    rng = np.random.default_rng(5)
    path = tmp_path / "s"
    with SeqVault.open(path, schema=schema, durability="none") as v:
        for u in (1, 2, 3):
            v.append(u, make_events(rng, 40))
        v.flush()
    return path


def test_commit_publishes_all_users_at_once(store):
    rng = np.random.default_rng(1)
    new = {u: make_events(rng, 30 + u) for u in (4, 5, 6)}
    with SeqVault.open(store) as w, SeqVault.open(store, read_only=True) as r:
        before = snapshot(r)
        with w.bulk_writer() as bw:
            for u, ev in new.items():
                bw.add(u, *split(ev))
            assert snapshot(r) == before  # nothing visible before the commit
        after = snapshot(r)  # the reader sees all three users at once
        for u in (4, 5, 6):
            order = expected_order([np.asarray(new[u]["ts"])])
            assert after[u]["ts"] == np.asarray(new[u]["ts"])[order].tolist()
            assert after[u]["item_id"] == np.asarray(new[u]["item_id"])[order].tolist()
            assert after[u]["action"] == [new[u]["action"][i] for i in order]
        assert {u: after[u] for u in (1, 2, 3)} == {u: before[u] for u in (1, 2, 3)}
        assert w.stats()["users"] == 6
        assert w.stats()["events"] == 3 * 40 + 34 + 35 + 36


def test_merge_with_existing_events_keeps_arrival_order_for_ties(store):
    rng = np.random.default_rng(2)
    with SeqVault.open(store) as v:
        old = v.read(2)
        old_ts = np.asarray(old["ts"])
        # New events at exactly the stored timestamps (and some others): stored ones first.
        ts = np.concatenate([old_ts[:10], rng.integers(1_000_000, 1_010_000, 15)])
        extra = make_events(rng, ts.size)
        extra["ts"] = ts
        with v.bulk_writer() as bw:
            bw.add(2, *split(extra))
        got = v.read(2)
        order = expected_order([old_ts, ts])
        items = np.concatenate([np.asarray(old["item_id"]), np.asarray(extra["item_id"])])
        assert got["ts"].tolist() == np.concatenate([old_ts, ts])[order].tolist()
        assert got["item_id"].tolist() == items[order].tolist()
        want = snapshot(v)
    with SeqVault.open(store, read_only=True) as r:  # reopened: the same
        assert snapshot(r) == want


def test_merge_existing_false_and_replace_drop_stored_events(store):
    rng = np.random.default_rng(3)
    ev = make_events(rng, 5)
    with SeqVault.open(store) as v:
        with v.bulk_writer() as bw:
            bw.add(1, *split(ev), replace=True)
        with v.bulk_writer(merge_existing=False) as bw:
            bw.add(3, *split(ev))
        order = expected_order([np.asarray(ev["ts"])])
        for u in (1, 3):
            assert v.read(u)["item_id"].tolist() == np.asarray(ev["item_id"])[order].tolist()
        assert v.read(2).count == 40


def test_reopen_sees_committed_events(store):
    rng = np.random.default_rng(4)
    with SeqVault.open(store) as v:
        with v.bulk_writer() as bw:
            for u in USERS:
                bw.add(u, *split(make_events(rng, 2_500)))  # more than one segment each
        want = snapshot(v)
        stats = comparable_stats(v)
    with SeqVault.open(store) as v:
        assert snapshot(v) == want
        assert v.stats()["events"] == stats["events"] == 3 * 40 + 6 * 2_500


@pytest.mark.parametrize("how", ["exception", "abort"])
def test_abort_leaves_the_store_exactly_as_before(store, how):
    rng = np.random.default_rng(6)
    with SeqVault.open(store) as v:
        before, stats, files = snapshot(v), comparable_stats(v), data_files(store)
        with pytest.raises(RuntimeError, match="boom") if how == "exception" else nullcontext():
            with v.bulk_writer() as bw:
                for u in USERS:  # existing users merged, new users, a new string
                    ev = make_events(rng, 3_000)
                    ev["action"] = ["never-seen-before"] * 3_000
                    bw.add(u, *split(ev))
                if how == "exception":
                    raise RuntimeError("boom")
                bw.abort()
        assert snapshot(v) == before
        assert comparable_stats(v) == stats
        assert data_files(store) == files
        with pytest.raises(StoreClosed):
            bw.add(1, *split(make_events(rng, 1)))
        # The store stays writable, and the string the aborted writer added can be used.
        v.append(1, {**make_events(rng, 1), "ts": [9_999_999], "action": ["never-seen-before"]})
        assert v.read(1, last=1)["action"].tolist() == ["never-seen-before"]
    with SeqVault.open(store, read_only=True) as r:
        assert snapshot(r, [2, 3, 4, 5, 6]) == {u: before[u] for u in [2, 3, 4, 5, 6]}


def test_add_after_commit_is_refused(store):
    rng = np.random.default_rng(7)
    with SeqVault.open(store) as v:
        bw = v.bulk_writer()
        bw.add(4, *split(make_events(rng, 3)))
        bw.commit()
        with pytest.raises(StoreClosed):
            bw.add(5, *split(make_events(rng, 3)))
        assert v.read(4).count == 3 and v.read(5).count == 0
