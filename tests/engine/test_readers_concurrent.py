"""Read-only processes read continuously while the writer appends, merges and deletes files:
every read is a prefix-consistent view of that user's history, and never goes back in time
(issue 3; docs/design/merge.md, "Readers")."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from seqvault import Schema, SeqVault

ROOT = Path(__file__).resolve().parents[2]
USERS = 8
# Not the bundled schema: two columns are enough to check prefix consistency across processes.
SCHEMA = {"columns": [{"name": "item", "type": "int64", "default": 0},
                      {"name": "act", "type": "string", "default": "v"}]}

READER = r"""
import json, random, sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from seqvault import SeqVault
from test_readers_concurrent import check_read, USERS
path, stop, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
r = SeqVault.open(path, read_only=True)
seen = {{}}
reads = 0
errors = []
while not stop.exists() or reads < 50:
    u = rnd.randrange(USERS)
    last = rnd.choice([None, None, 1, 5, 40])
    before = rnd.choice([None, None, 12_000 + rnd.randrange(60_000)])
    try:
        seq = r.read(u, last=last, before=before)
        k = check_read(u, seq, last, before, seen.get(u, 0))
        seen[u] = max(seen.get(u, 0), k)
    except Exception as exc:  # report, do not die: the parent asserts
        errors.append(f"user {{u}} last={{last}} before={{before}}: {{exc!r}}")
        if len(errors) > 5:
            break
    reads += 1
    if reads % 97 == 0:
        r.refresh()
r.close()
print(json.dumps({{"reads": reads, "errors": errors, "seen": seen}}))
"""


@functools.cache
def events_for(u: int, r: int) -> dict:
    rng = np.random.default_rng(u * 7919 + r)
    n = int(rng.integers(1, 7))
    base = 10_000 + 100 * r - (350 if (u + r) % 5 == 0 else 0)  # late appends
    ts = base + rng.integers(0, 30, n)
    ts[rng.integers(0, n, n // 2)] = base + 3  # ties
    return {"ts": ts, "item": (u << 32) + r * 100 + np.arange(n),
            "act": [["v", "c", "l"][(r + i) % 3] for i in range(n)]}


@functools.lru_cache(maxsize=4096)
def history(u: int, k: int) -> list[tuple[int, int]]:
    """User u's events after its first k appends, in read order."""
    rows: list[tuple[int, int]] = []
    for r in range(k):
        ev = events_for(u, r)
        rows += list(zip(ev["ts"].tolist(), ev["item"].tolist()))
    return sorted(rows, key=lambda x: x[0])


def check_read(u: int, seq, last, before, at_least: int) -> int:
    """Return k such that the read equals the first k appends' view; raise if none."""
    got = list(zip(seq["ts"].tolist(), seq["item"].tolist()))
    rounds = {int(i) - (u << 32) for i in seq["item"].tolist()}
    k_max = max((x // 100 for x in rounds), default=-1) + 1
    # the newest append seen bounds k from below; appends after it may be hidden by
    # last/before, so try k from there up to a little beyond
    for k in range(max(at_least, k_max), max(at_least, k_max) + 400):
        want = history(u, k)
        if before is not None:
            want = [w for w in want if w[0] < before]
        if last is not None:
            want = want[-last:]
        if got == want:
            return k
        if last is None and before is None:
            break
    raise AssertionError(f"user {u}: {len(got)} events are not a prefix view "
                         f"(k >= {max(at_least, k_max)})")


def test_readers_see_prefix_consistent_views_during_merge(tmp_path):
    path = tmp_path / "s"
    stop = tmp_path / "stop"
    w = SeqVault.open(path, schema=Schema.from_dict(SCHEMA), durability="none",
                      lifetime_segment_events=16, max_file_bytes=8_000, reclaim_ratio=0.8)
    try:
        for u in range(USERS):
            w.append(u, events_for(u, 0))
        w.flush()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        code = READER.format(tests=str(ROOT / "tests" / "engine"))
        readers = [subprocess.Popen([sys.executable, "-c", code, str(path), str(stop), str(i)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
                   for i in range(3)]
        r = 1
        t_end = time.monotonic() + 6.0
        while time.monotonic() < t_end:
            for u in range(USERS):
                w.append(u, events_for(u, r))
            if r % 2 == 0:
                w.flush()
            if r % 5 == 0:
                w.merge()
            r += 1
        stop.touch()
        results = []
        for p in readers:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()[-3000:]
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        st = w.stats()
    finally:
        w.close()
    for res in results:
        assert res["errors"] == [], res["errors"]
        assert res["reads"] >= 50
    assert st["reclaimed_files"] >= 3, st  # files were deleted under the readers
    assert st["merge_passes"] >= 3
    # readers followed the writer: some read saw a late round
    assert max(max(res["seen"].values(), default=0) for res in results) >= r // 3


def test_read_only_sees_commits_at_once_after_refresh(tmp_path):
    w = SeqVault.open(tmp_path / "s", schema=Schema.from_dict(SCHEMA), durability="none")
    r = SeqVault.open(tmp_path / "s", read_only=True, refresh_interval=3600)
    try:
        w.append(1, events_for(1, 0))
        w.flush()
        w.append(1, events_for(1, 1))  # in the log only
        assert len(r.read(1)) == 0  # no refresh yet (interval of an hour)
        r.refresh()
        assert list(zip(r.read(1)["ts"].tolist(), r.read(1)["item"].tolist())) == history(1, 2)
        w.merge()
        w.append(1, events_for(1, 2))
        r.refresh()
        assert list(zip(r.read(1)["ts"].tolist(), r.read(1)["item"].tolist())) == history(1, 3)
    finally:
        r.close()
        w.close()


def test_refresh_interval_zero_sees_every_commit(tmp_path):
    w = SeqVault.open(tmp_path / "s", schema=Schema.from_dict(SCHEMA), durability="none",
                      tail_events=5)
    r = SeqVault.open(tmp_path / "s", read_only=True, refresh_interval=0.0)
    try:
        for k in range(1, 25):
            w.append(2, events_for(2, k - 1))
            if k % 7 == 0:
                w.merge()
            got = list(zip(r.read(2)["ts"].tolist(), r.read(2)["item"].tolist()))
            assert got == history(2, k)
    finally:
        r.close()
        w.close()


def test_reader_decodes_strings_a_bulk_load_added(tmp_path):
    """A bulk load that adds dictionary strings while the log is empty must rotate the log, or
    a read-only process (which assigns codes by replaying the log) decodes them wrongly."""
    from seqvault.validate import validate_events

    w = SeqVault.open(tmp_path / "s", schema=Schema.from_dict(SCHEMA), durability="none")
    try:
        w.append(1, {"ts": [1], "item": [1], "act": ["v"]})
        w.flush()  # the log is empty from here
        r = SeqVault.open(tmp_path / "s", read_only=True, refresh_interval=3600)
        try:
            assert r.read(1)["act"].tolist() == ["v"]
            ts, cols = validate_events(w.schema, {"ts": [5], "item": [2], "act": ["bulk-new"]})
            with w.bulk_writer() as bw:
                bw.add(2, ts, cols)
            w.append(3, {"ts": [9], "item": [3], "act": ["later"]})
            r.refresh()
            assert r.read(2)["act"].tolist() == ["bulk-new"]
            assert r.read(3)["act"].tolist() == ["later"]
        finally:
            r.close()
    finally:
        w.close()
