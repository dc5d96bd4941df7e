"""SIGKILL at every step of merge and reclamation (fault hook) and at random moments: the
store reopens with every acknowledged event, in order, and no duplicates (issue 3)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from seqvault import SeqVault
from seqvault.faults import FAULT_ENV, FAULT_POINTS
from seqvault.files import parse_file_name

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("SEQVAULT_MERGE_KILLS", "5"))
USERS = 6

CHILD = r"""
import json, sys
import numpy as np
from seqvault import Schema, SeqVault
sys.path.insert(0, {tests!r})
from test_merge_crash import events_for
path, start, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
schema = Schema.from_dict({{"columns": [{{"name": "item", "type": "int64", "default": 0}},
                                        {{"name": "act", "type": "string", "default": "v"}}]}})
v = SeqVault.open(path, schema=schema, durability="sync", lifetime_segment_events=16,
                  max_file_bytes=6000, reclaim_ratio=0.7, tail_events=10_000)
out = sys.stdout
for r in range(start, start + rounds):
    for u in range({users}):
        v.append(u, events_for(u, r))
        out.write(json.dumps([u, r]) + "\n"); out.flush()   # acknowledged
    v.flush()
    v.merge()
v.close()
"""


def events_for(u: int, r: int) -> dict:
    """Deterministic events of user u's r-th append: some late, many ties."""
    rng = np.random.default_rng(u * 1000 + r)
    n = int(rng.integers(3, 9))
    base = 10_000 + 1000 * r - (2500 if (u + r) % 4 == 0 else 0)  # ~25% late appends
    ts = base + rng.integers(0, 40, n)
    ts[rng.integers(0, n, n // 2)] = base + 7
    return {"ts": ts, "item": (u << 32) + r * 100 + np.arange(n), "act": ["v", "c"] * (n // 2)
            + ["l"] * (n % 2)}


def expected(u: int, rounds: list[int]) -> list[tuple[int, int]]:
    rows: list[tuple[int, int]] = []
    for r in rounds:
        ev = events_for(u, r)
        rows += list(zip(ev["ts"].tolist(), ev["item"].tolist()))
    return sorted(rows, key=lambda x: x[0])  # stable: arrival order for ties


def run_child(path: Path, start: int, rounds: int, fault: str | None = None,
              kill_after: float | None = None) -> tuple[int, list[tuple[int, int]]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    code = CHILD.format(tests=str(ROOT / "tests" / "engine"), users=USERS)
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(start), str(rounds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({proc.returncode}): {err.decode()[-3000:]}")
    acked = [tuple(json.loads(line)) for line in out.decode().splitlines() if line.strip()]
    return proc.returncode, acked  # type: ignore[return-value]


def check_store(path: Path, acked: list[tuple[int, int]], maybe: list[tuple[int, int]]
                ) -> list[tuple[int, int]]:
    """Every acknowledged append is there, in order, once; an unacknowledged one is whole or
    absent. Also: no file on disk outside the catalog, and a merge after recovery works."""
    landed: list[tuple[int, int]] = []
    by_user: dict[int, list[int]] = {}
    for u, r in acked:
        by_user.setdefault(u, []).append(r)
    with SeqVault.open(path) as v:
        on_disk = {p.name for p in (v.path / "data").iterdir() if parse_file_name(p.name)}
        cat = {f"{i.kind}-{fid:08d}.svx" for fid, i in v.catalog.items()}
        assert on_disk <= cat, f"orphan files after recovery: {on_disk - cat}"
        for u in range(USERS):
            seq = v.read(u)
            got = list(zip(seq["ts"].tolist(), seq["item"].tolist()))
            want = expected(u, by_user.get(u, []))
            extra = [r for uu, r in maybe if uu == u]
            if got != want and extra:
                want = expected(u, by_user.get(u, []) + extra)
                landed += [(u, r) for r in extra]
            assert got == want, f"user {u}: {len(got)} events, expected {len(want)}"
        v.merge()
        for u in range(USERS):
            seq = v.read(u)
            got = list(zip(seq["ts"].tolist(), seq["item"].tolist()))
            assert len(got) == len(set(got))
    return landed


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_sigkill_at_each_merge_step(tmp_path, point):
    path = tmp_path / "s"
    _rc, acked = run_child(path, 0, 3)  # a store with merged history and garbage
    killed = 0
    start = 3
    for hit in (1, 3):
        rc, more = run_child(path, start, 3, fault=f"{point}@{hit}")
        killed += rc == -signal.SIGKILL
        acked += more
        start += 3
        check_store(path, acked, [])
    assert killed >= 1, f"the fault point {point} was never reached"


def test_sigkill_at_random_moments(tmp_path):
    _random_kills(tmp_path, KILLS, seed=42)


@pytest.mark.slow
def test_sigkill_at_random_moments_many(tmp_path, request):
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("40 kills: run with -m slow")
    _random_kills(tmp_path, 40, seed=7)


def _random_kills(tmp_path: Path, kills: int, seed: int) -> None:
    path = tmp_path / "s"
    rnd = random.Random(seed)
    killed = 0
    _rc, acked = run_child(path, 0, 2)  # create the store first (creation is not under test)
    start = 2
    for _ in range(kills):
        # Far more rounds than fit before the kill: faster appends let 40 rounds finish first.
        rc, more = run_child(path, start, 400, kill_after=rnd.uniform(0.6, 1.6))
        killed += rc == -signal.SIGKILL
        acked += more
        # the append after the last acknowledged one may or may not have landed
        nxt = [(more[-1][0] + 1, more[-1][1])] if more else [(0, start)]
        if nxt[0][0] == USERS:
            nxt = [(0, nxt[0][1] + 1)]
        acked += check_store(path, acked, nxt)
        # the following run starts after whatever round the child reached
        start = (more[-1][1] + 2) if more else start + 1
    assert killed >= kills // 2, "children finished before the kill: not a crash test"
