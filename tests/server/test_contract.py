"""The contract is the truth: schemathesis, every check on, against a real `seqvault serve`.

Runs `st run` (the schemathesis CLI, a dev dependency) on the server's /openapi.json with a
bounded example count and a fixed seed, writes enabled (token), so every operation is
exercised in positive and negative modes. Any failure — a schema-valid request refused, a
schema-violating one accepted, a response that does not match its schema, a 5xx — fails
`make test`. The only reports dropped are the two cross-field rules JSON Schema cannot state
(st_hooks.py says which, and how they are recognised).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import ROOT, TOKEN, make_store

pytest.importorskip("schemathesis")
EXAMPLES = 10  # per operation and phase: ~600 requests, a few seconds


def test_schemathesis_finds_no_failure(tmp_path: Path, serve_subprocess: Any) -> None:
    store = make_store(tmp_path / "s", {1: 50, 2: 5})
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    # limits chosen so the batch budget (users x last) can never be passed by a valid call:
    # that rule is stated in the description, not in JSON Schema
    proc, url, sock = serve_subprocess(store, "--allow-writes", "--token-file", str(token),
                                       "--max-last", "1000", "--max-batch-users", "100",
                                       "--max-response-events", "100000")
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.server.st_hooks",
           "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    out = subprocess.run(
        [st, "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES),
         "--seed", "1", "--workers", "1", "--header", f"Authorization: Bearer {TOKEN}",
         "--report-dir", str(tmp_path / "report")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-6000:]
    assert " passed" in report and "found" not in report.split("SUMMARY")[-1]
    proc.terminate()
    proc.wait(timeout=30)
    sock.close()
