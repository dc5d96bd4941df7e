"""`seqvault merge` and `seqvault verify` show a progress bar on a terminal (stderr), like
ingest, and stay quiet in a pipe and with --json (docs/design/merge.md; STYLE.md, "Long work
... shows a progress bar on a terminal ... and stays quiet in pipes and CI")."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import numpy as np

from seqvault import SeqVault

from ..conftest import SCHEMA_DICT, make_events
from .test_cli import ROOT, sv

MERGE_LABEL = "merge (users)"


def _store(path: Path, users: int = 30) -> None:
    from seqvault import Schema

    rng = np.random.default_rng(3)
    with SeqVault.open(path, schema=Schema.from_dict(SCHEMA_DICT), durability="none",
                       merge_batch_users=8) as v:
        for r in range(2):
            for u in range(users):
                v.append(u, make_events(rng, 10, t0=1_000_000 + 10_000 * r))
            v.flush()


def _on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run the command with stderr on a pseudo-terminal (stdout a pipe): (code, stdout,
    what the terminal received)."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    for k in ("CI", "SEQVAULT_NO_PROGRESS", "NO_COLOR"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "seqvault", *args], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    term = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            term += chunk
        elif proc.poll() is not None:
            break
    out = proc.stdout.read().decode() if proc.stdout else ""
    code = proc.wait(timeout=120)
    os.close(master)
    return code, out, term.decode(errors="replace")


def test_merge_in_a_pipe_is_quiet_and_progress_can_be_forced(tmp_path):
    store = tmp_path / "s"
    _store(store)
    r = sv("merge", store=store)
    assert r.returncode == 0, r.stderr
    assert MERGE_LABEL not in r.stderr and "Merged 30 users" in r.stderr
    _store(store)  # more work for the next merge
    r = sv("merge", "--progress", "--json", store=store)
    assert r.returncode == 0, r.stderr
    assert MERGE_LABEL in r.stderr  # forced on, on stderr only: stdout is the JSON
    assert json.loads(r.stdout)["users_merged"] == 30


def test_merge_and_verify_show_a_bar_on_a_terminal_but_not_with_json(tmp_path):
    store = tmp_path / "s"
    _store(store)
    code, out, term = _on_a_terminal("merge", "--store", str(store))
    assert code == 0, term
    assert MERGE_LABEL in term and "30/30" in term  # the bar reached its total
    _store(store)
    code, out, term = _on_a_terminal("merge", "--json", "--store", str(store))
    assert code == 0, term
    assert MERGE_LABEL not in term and json.loads(out)["users_merged"] == 30
    code, out, term = _on_a_terminal("verify", "--store", str(store))
    assert code == 0, term
    assert "verify" in term and "30/30" in term
    code, out, term = _on_a_terminal("verify", "--json", "--store", str(store))
    assert code == 0, term
    assert "30/30" not in term and json.loads(out)["ok"]
