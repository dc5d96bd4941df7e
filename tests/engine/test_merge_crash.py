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
from seqvault.merge_proc import CHILD_POINTS, WRITER_POINTS

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("SEQVAULT_MERGE_KILLS", "5"))
USERS = 6

CHILD = r"""
import json, sys
import numpy as np
from seqvault import MergeFailed, Schema, SeqVault
sys.path.insert(0, {tests!r})
from test_merge_crash import events_for
path, start, rounds, worker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
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
    try:
        v.merge(worker=worker)
    except MergeFailed as exc:  # the merge process was killed: reported, the writer goes on
        sys.stderr.write("MERGE FAILED: %s\n" % exc); sys.stderr.flush()
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
              kill_after: float | None = None, worker: str = "thread",
              stderr: list[str] | None = None) -> tuple[int, list[tuple[int, int]]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    code = CHILD.format(tests=str(ROOT / "tests" / "engine"), users=USERS)
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(start), str(rounds),
                             worker],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({proc.returncode}): {err.decode()[-3000:]}")
    acked = [tuple(json.loads(line)) for line in out.decode().splitlines() if line.strip()]
    if stderr is not None:
        stderr.append(err.decode())
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


# ---------------------------------------------------------------------- the merge process
def merge_processes_of(path: Path) -> list[int]:
    """Pids of merge processes working for the store at `path` (their command line names it)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().split()[2]
        except OSError:
            continue
        if b"seqvault.merge_child" in cmd and str(path).encode() in cmd and state != "Z":
            pids.append(int(d.name))
    return pids


def wait_no_merge_process(path: Path) -> None:
    deadline = time.monotonic() + 30  # a bound, not a timing assertion: it exits within ~0.1 s
    while merge_processes_of(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not merge_processes_of(path), "a merge process outlived its writer"


@pytest.mark.parametrize("point", CHILD_POINTS)
def test_sigkill_of_the_merge_process_at_each_step(tmp_path, point):
    """The merge process is killed after writing (unsynced) or after its fsync: the writer
    reports MergeFailed and goes on; the store reopens with every acknowledged event."""
    path = tmp_path / "s"
    _rc, acked = run_child(path, 0, 3, worker="process")
    start = 3
    failed = 0
    for hit in (1, 3):
        errs: list[str] = []
        rc, more = run_child(path, start, 3, fault=f"{point}@{hit}", worker="process",
                             stderr=errs)
        assert rc == 0, errs  # the writer itself survives
        failed += errs[0].count("MERGE FAILED") and "signal 9" in errs[0]
        acked += more
        start += 3
        check_store(path, acked, [])
        wait_no_merge_process(path)
    assert failed >= 1, f"the merge process never reached {point}"


@pytest.mark.parametrize("point", WRITER_POINTS)
def test_sigkill_of_the_writer_while_the_merge_process_runs(tmp_path, point):
    """The writer is killed while its merge process works on a batch (merge_proc:running) or
    at its own steps of a process merge: the merge process exits by itself, and the store
    reopens with every acknowledged event."""
    path = tmp_path / "s"
    _rc, acked = run_child(path, 0, 3, worker="process")
    killed = 0
    start = 3
    for hit in (1, 3):
        rc, more = run_child(path, start, 3, fault=f"{point}@{hit}", worker="process")
        killed += rc == -signal.SIGKILL
        acked += more
        start += 3
        wait_no_merge_process(path)
        check_store(path, acked, [])
    assert killed >= 1, f"the fault point {point} was never reached"


def test_sigkill_of_the_writer_at_random_moments_with_the_merge_process(tmp_path):
    path = tmp_path / "s"
    rnd = random.Random(11)
    _rc, acked = run_child(path, 0, 2, worker="process")
    start = 2
    for _ in range(3):
        rc, more = run_child(path, start, 400, kill_after=rnd.uniform(1.0, 2.5),
                             worker="process")
        acked += more
        nxt = [(more[-1][0] + 1, more[-1][1])] if more else [(0, start)]
        if nxt[0][0] == USERS:
            nxt = [(0, nxt[0][1] + 1)]
        wait_no_merge_process(path)
        acked += check_store(path, acked, nxt)
        start = (more[-1][1] + 2) if more else start + 1
