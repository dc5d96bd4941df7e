"""Folding at the flush (seqvault/fold.py): a user's small real-time segments and its memtable
events become one segment at the next full flush, byte for byte what the per-user flush and a
merge write; old segments stay valid until the commit; damage folds nobody."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqvault import SeqVault, fold, sealing
from seqvault.errors import CorruptionError
from seqvault.index import user_hash
from seqvault.segment import key_bytes
from tests.engine.test_many_user_batches import _batches, _load, _schema

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000_000


def _rounds(rng, key=int):
    # later rounds hold late events (older than what the first flush sealed) for some users
    return [_batches(rng, 500, 3, T0, key), _batches(rng, 300, 2, T0 - 3_600_000, key),
            _batches(rng, 700, 1, T0 + 86_400_000, key)]


def _want(rounds, key=int):
    """Every user's (ts, item_id) in read order: by time, ties in arrival order."""
    out: dict = {}
    for r in rounds:
        for u, t, i in zip(r["user_id"], r["ts"].tolist(), r["item_id"].tolist()):
            out.setdefault(key(u), []).append((t, i))
    return {u: sorted(v, key=lambda x: x[0]) for u, v in out.items()}


def _got(v, u):
    r = v.read(u)
    return list(zip(r["ts"].tolist(), r["item_id"].tolist()))


@pytest.mark.parametrize("user_type", ["int64", "string"])
def test_fold_at_the_flush_writes_the_bytes_of_the_per_user_fold(tmp_path, monkeypatch,
                                                                  user_type):
    monkeypatch.setattr(fold, "FOLD_MIN_USERS", 1)
    schema = _schema(user_type)
    key = str if user_type == "string" else int
    rounds = _rounds(np.random.default_rng(8), key)
    fast = _load(tmp_path / "fast", schema, rounds)
    calls = []
    real = sealing._seal_each
    monkeypatch.setattr(sealing, "_seal_many", lambda m, w, mem, *a: calls.append(1) or real(
        m, w, mem))
    slow = _load(tmp_path / "slow", schema, rounds)
    assert calls, "the per-user flush did not run"
    names = sorted(p.name for p in (fast / "data").iterdir())
    assert names == sorted(p.name for p in (slow / "data").iterdir())
    for name in names:
        assert (fast / "data" / name).read_bytes() == (slow / "data" / name).read_bytes(), name
    want = _want(rounds, key)
    with SeqVault.open(fast, read_only=True) as a:
        assert a.stats()["segments"] == 700  # one segment a user, late events included
        for u in list(want)[::5]:
            assert _got(a, u) == want[u], u


def test_folded_users_read_right_across_reopen_and_merge_leaves_them_alone(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(fold, "FOLD_MIN_USERS", 1)
    rounds = _rounds(np.random.default_rng(9))
    store = _load(tmp_path / "s", _schema(), rounds)
    want = _want(rounds)
    with SeqVault.open(store, read_only=True) as r:  # a reader replays what the writer would
        assert all(_got(r, u) == want[u] for u in want)
    with SeqVault.open(store) as v:
        for u in want:
            ext = v.index.extents_of(user_hash(key_bytes(u)[1]))
            assert len(ext) == 1 and ext[0].count == len(want[u]), u
        got = v.merge(reclaim=False)
        assert got["users_merged"] == 0 and got["segments_out"] == 0
        assert all(_got(v, u) == want[u] for u in want)


def test_a_flush_with_fewer_candidates_than_FOLD_MIN_USERS_folds_nobody(tmp_path, monkeypatch):
    rounds = _rounds(np.random.default_rng(10))[:2]  # the second flush: 300 candidates
    monkeypatch.setattr(fold, "FOLD_MIN_USERS", 301)
    store = _load(tmp_path / "s", _schema(), rounds)
    with SeqVault.open(store, read_only=True) as r:
        assert r.stats()["segments"] > 500 + 300  # nobody folded (late events: 2 pieces)
    monkeypatch.setattr(fold, "FOLD_MIN_USERS", 300)
    store = _load(tmp_path / "t", _schema(), rounds)
    with SeqVault.open(store, read_only=True) as r:
        assert r.stats()["segments"] == 500  # all 300 folded


def test_a_damaged_old_segment_folds_nobody_and_is_still_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(fold, "FOLD_MIN_USERS", 1)
    rng = np.random.default_rng(11)
    schema = _schema()
    first = _batches(rng, 200, 2, T0)
    store = _load(tmp_path / "s", schema, [first])
    victim = 17
    with SeqVault.open(store) as v:
        (e,) = v.index.extents_of(user_hash(key_bytes(victim)[1]))
        path = v.files.path(e.file)
    with open(path, "r+b") as fh:  # a payload byte of the victim's segment
        fh.seek(e.off + e.length - 1)
        b = fh.read(1)
        fh.seek(e.off + e.length - 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    second = _batches(rng, 200, 1, T0 + 1000)
    with SeqVault.open(store, durability="none") as v:
        v.append_batch(second)
        v.flush()
        ext = v.index.extents_of(user_hash(key_bytes(victim)[1]))
        assert len(ext) == 2 and ext[1] == e  # not folded: the damaged segment stays listed
        with pytest.raises(CorruptionError):
            v.read(victim)
        others = v.index.extents_of(user_hash(key_bytes(3)[1]))
        assert len(others) == 1 and others[0].count == 3  # the others were folded


CHILD = r"""
import json, os, signal, sys
import numpy as np
from seqvault import SeqVault, fold, manifest
from tests.engine.test_many_user_batches import _batches, _schema
fold.FOLD_MIN_USERS = 1
when = sys.argv[2]
real = manifest.Manifest.commit
def commit(self, edit):
    if edit.batch is not None and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    seq = real(self, edit)
    if edit.batch is not None and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return seq
rng = np.random.default_rng(12)
v = SeqVault.open(sys.argv[1], schema=_schema(), durability="sync")
r1 = _batches(rng, 300, 2, 1_790_000_000_000)
v.append_batch(r1)
print(json.dumps([int(x) for x in r1["item_id"]]), flush=True)
v.flush()
r2 = _batches(rng, 300, 1, 1_790_000_000_000)
v.append_batch(r2)
print(json.dumps([int(x) for x in r2["item_id"]]), flush=True)
manifest.Manifest.commit = commit
v.flush()
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_before_or_after_the_folding_flush_commit_loses_nothing(tmp_path, when):
    store = tmp_path / "s"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(store), when], capture_output=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    acked = [x for line in proc.stdout.decode().splitlines() for x in json.loads(line)]
    assert len(acked) == 900
    with SeqVault.open(store) as v:
        got = sorted(x for u in range(300) for x in v.read(u)["item_id"].tolist())
        assert got == sorted(acked)  # every acknowledged event, once
        if when == "after":  # published: one folded segment a user
            assert v.stats()["segments"] == 300
        assert v.verify()["ok"], v.verify()["problems"]


def test_a_reader_open_across_the_folding_flush_sees_the_same_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(fold, "FOLD_MIN_USERS", 1)
    rounds = _rounds(np.random.default_rng(13))
    store = tmp_path / "s"
    w = SeqVault.open(store, schema=_schema(), durability="none")
    try:
        w.append_batch(rounds[0])
        w.flush()
        r = SeqVault.open(store, read_only=True)
        try:
            first = _want(rounds[:1])
            assert all(_got(r, u) == first[u] for u in first)
            w.append_batch(rounds[1])  # in the log: the reader replays it
            r.refresh()
            two = _want(rounds[:2])
            assert all(_got(r, u) == two[u] for u in two)
            w.flush()  # folds 300 users: their old segments leave the index, the log rotates
            r.refresh()
            assert all(_got(r, u) == two[u] for u in two)
            assert r.stats()["segments"] == w.stats()["segments"] == 500
        finally:
            r.close()
    finally:
        w.close()
