"""Crash safety: a writer appending with durability="sync" is killed with SIGKILL at random
moments (mid-append, mid-flush, mid-checkpoint). After reopening, every acknowledged append is
present exactly once, whole and in order; the only other events allowed are whole appends that
were in flight when the process died. The same holds at "batch", whose promise covers a killed
process (not a lost machine).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from seqvault import Schema, SeqVault

# Not the bundled schema: "call" numbers each append so the check can tell which survived.
SCHEMA = Schema.from_dict({"columns": [{"name": "call", "type": "int64", "default": 0},
                                       {"name": "act", "type": "string", "default": "v"}]})
USERS = 7

CHILD = textwrap.dedent("""
    import sys
    from seqvault import SeqVault
    path, start, durability = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    v = SeqVault.open(path, durability=durability, memtable_events=300, tail_events=120,
                      checkpoint_deltas=5)
    i = start
    while True:
        n = 1 + i % 5
        # timestamps collide across calls (i // 3) so tie order is exercised too
        v.append(i % 7, {"ts": [(i // 3) % 50 + j % 2 for j in range(n)], "call": [i] * n,
                         "act": [f"a{i % 11}"] * n})
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
        i += 1
""")


def expected_rows(calls: list[int]) -> dict[int, list[tuple[int, int, str]]]:
    """Model of what the store must return per user for the given (arrival-ordered) calls."""
    per_user: dict[int, list[tuple[int, int, str]]] = {}
    for i in calls:
        n = 1 + i % 5
        for j in range(n):
            per_user.setdefault(i % 7, []).append(((i // 3) % 50 + j % 2, i, f"a{i % 11}"))
    return {u: sorted(rows, key=lambda r: r[0]) for u, rows in per_user.items()}


def run_kills(tmp_path: Path, kills: int, seed: int, durability: str = "sync") -> None:
    rng = random.Random(seed)
    store = tmp_path / "s"
    SeqVault.open(store, schema=SCHEMA).close()
    acked: list[int] = []
    present_calls: list[int] = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for _ in range(kills):
        start = max(present_calls, default=-1) + 1
        errlog = tmp_path / "child.err"
        with open(errlog, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(start),
                                     durability],
                                    stdout=subprocess.PIPE, stderr=err, env=env)
        # Wait until it has acknowledged something, then kill at a random later moment.
        # (Read through the same buffered reader: communicate() would skip its buffer.)
        first = proc.stdout.readline()
        assert first, errlog.read_text()
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        new_acks = [int(x) for x in (first + rest).split()]
        acked.extend(new_acks)
        with SeqVault.open(store) as v:
            rows = {u: list(zip(v.read(u)["ts"].tolist(), v.read(u)["call"].tolist(),
                                v.read(u)["act"].tolist())) for u in range(USERS)}
        calls = sorted({c for r in rows.values() for _, c, _ in r})
        missing = set(acked) - set(calls)
        assert not missing, f"acknowledged appends lost: {sorted(missing)[:10]}"
        extra = set(calls) - set(acked)
        # Only the append in flight at the kill may be there unacknowledged.
        assert extra <= {max(acked) + 1}, f"unexpected calls {sorted(extra)}"
        assert rows == {u: r for u, r in expected_rows(calls).items()} | {
            u: [] for u in range(USERS) if u not in expected_rows(calls)}
        present_calls = calls
        acked = calls  # an in-flight append that survived is durable from now on


def test_sigkill_during_sync_appends_loses_nothing(tmp_path):
    run_kills(tmp_path, kills=10, seed=1)


def test_sigkill_during_batch_appends_loses_nothing(tmp_path):
    """`batch` acknowledges a record once it is written to the log (in the page cache, its
    fsync up to `batch_interval` later): a killed process loses none of them."""
    run_kills(tmp_path, kills=8, seed=3, durability="batch")


@pytest.mark.slow
def test_sigkill_many_times(tmp_path):
    run_kills(tmp_path, kills=60, seed=2)
