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
# No string column: the other schema of the compiled appends below.
NUMERIC = Schema.from_dict({"columns": [{"name": "call", "type": "int64", "default": 0}]})
USERS = 7
# Plausible times (ms since 2023): each append is then the compiled `append_call` (check,
# record, write, insert and string coding in one C call; tests/storage/test_append_call.py),
# which the child asserts. Times near 0 are left to the Python path.
BASE_TS = 1_700_000_000_000

CHILD = textwrap.dedent("""
    import sys
    from seqvault import SeqVault
    path, start, durability, base = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    from seqvault import prepare
    v = SeqVault.open(path, durability=durability, memtable_events=300, tail_events=120,
                      checkpoint_deltas=5)
    strings = "act" in v.schema.column_names
    taken = [0]
    if base and prepare.KERNEL is not None:
        kernel, call = prepare.KERNEL, prepare.KERNEL.append_call
        names = {k: getattr(kernel, k) for k in dir(kernel) if not k.startswith("_")}

        def counted(*args):
            got = call(*args)
            taken[0] += got is not None
            return got

        prepare.KERNEL = type(kernel)("counted")
        prepare.KERNEL.__dict__.update(names, append_call=counted)
    i = start
    while True:
        n = 1 + i % 5
        # timestamps collide across calls (i // 3) so tie order is exercised too
        ev = {"ts": [base + (i // 3) % 50 + j % 2 for j in range(n)], "call": [i] * n}
        if strings:
            ev["act"] = [f"a{i % 11}"] * n
        v.append(i % 7, ev)
        if i == start + 1 and prepare.KERNEL is not None and base:
            assert taken[0] >= 1, "the appends did not go through append_call"
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
        i += 1
""")


def expected_rows(calls: list[int], strings: bool = True, base: int = 0
                  ) -> dict[int, list[tuple[int, int, str]]]:
    """Model of what the store must return per user for the given (arrival-ordered) calls."""
    per_user: dict[int, list[tuple[int, int, str]]] = {}
    for i in calls:
        n = 1 + i % 5
        for j in range(n):
            per_user.setdefault(i % 7, []).append(
                (base + (i // 3) % 50 + j % 2, i,
                 f"a{i % 11}" if strings else ""))
    return {u: sorted(rows, key=lambda r: r[0]) for u, rows in per_user.items()}


def run_kills(tmp_path: Path, kills: int, seed: int, durability: str = "sync",
              schema: Schema = SCHEMA, base: int = 0) -> None:
    rng = random.Random(seed)
    store = tmp_path / "s"
    SeqVault.open(store, schema=schema).close()
    strings = "act" in schema.column_names
    acked: list[int] = []
    present_calls: list[int] = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for _ in range(kills):
        start = max(present_calls, default=-1) + 1
        errlog = tmp_path / "child.err"
        with open(errlog, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(start),
                                     durability, str(base)],
                                    stdout=subprocess.PIPE, stderr=err, env=env)
        # Wait until it has acknowledged something, then kill at a random later moment.
        # (Read through the same buffered reader: communicate() would skip its buffer.)
        first = proc.stdout.readline()
        assert first, errlog.read_text()
        time.sleep(rng.uniform(0.0, 0.3))
        assert proc.poll() is None, errlog.read_text()  # killed while appending, not dead already
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        new_acks = [int(x) for x in (first + rest).split()]
        acked.extend(new_acks)
        with SeqVault.open(store) as v:
            got = {u: v.read(u) for u in range(USERS)}
        rows = {u: list(zip(r["ts"].tolist(), r["call"].tolist(),
                            r["act"].tolist() if strings else [""] * r["ts"].size))
                for u, r in got.items()}
        calls = sorted({c for r in rows.values() for _, c, _ in r})
        missing = set(acked) - set(calls)
        assert not missing, f"acknowledged appends lost: {sorted(missing)[:10]}"
        extra = set(calls) - set(acked)
        # Only the append in flight at the kill may be there unacknowledged.
        assert extra <= {max(acked) + 1}, f"unexpected calls {sorted(extra)}"
        want = expected_rows(calls, strings, base)
        assert rows == want | {u: [] for u in range(USERS) if u not in want}
        present_calls = calls
        acked = calls  # an in-flight append that survived is durable from now on


def test_sigkill_during_sync_appends_loses_nothing(tmp_path):
    run_kills(tmp_path, kills=10, seed=1)


def test_sigkill_during_batch_appends_loses_nothing(tmp_path):
    """`batch` acknowledges a record once it is written to the log (in the page cache, its
    fsync up to `batch_interval` later): a killed process loses none of them."""
    run_kills(tmp_path, kills=8, seed=3, durability="batch")


@pytest.mark.parametrize("durability", ["sync", "batch"])
@pytest.mark.parametrize("schema", [SCHEMA, NUMERIC], ids=["strings", "numeric"])
def test_sigkill_during_compiled_appends_loses_nothing(tmp_path, durability, schema):
    """The same with plausible times, where every append after a memtable's first is one
    compiled call that writes the record itself and codes the strings
    (native_append.append_call)."""
    run_kills(tmp_path, kills=6, seed=4, durability=durability, schema=schema, base=BASE_TS)


@pytest.mark.slow
def test_sigkill_many_times(tmp_path):
    run_kills(tmp_path, kills=60, seed=2)
