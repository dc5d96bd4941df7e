"""Fixtures of the data-safety tests: the bundled schema, recent events, the real command line,
and user namespaces for filesystem faults (a read-only mount, a small full tmpfs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seqvault import Schema, SeqVault

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "schema" / "behavior.toml"
ACTIONS = np.array(["impression", "click", "like"])


def now_ms() -> int:
    return int(time.time() * 1000)


def recent_events(n: int, *, seed: int = 0, start: int | None = None) -> dict[str, Any]:
    """`n` events in the bundled schema's shape, inside its 730-day retention window."""
    rng = np.random.default_rng(seed)
    t0 = now_ms() - 86_400_000 if start is None else start
    return {
        "ts": np.sort(t0 + rng.integers(0, 3_600_000, n)),
        "item_id": rng.integers(0, 1 << 40, n),
        "action": ACTIONS[rng.integers(0, ACTIONS.size, n)].tolist(),
        "category": rng.integers(0, 900, n).astype(np.uint16),
        "dwell_ms": rng.integers(0, 60_000, n).astype(np.uint32),
        "scenario": ["feed"] * n,
    }


@pytest.fixture
def behavior() -> Schema:
    return Schema.load(SCHEMA_PATH)


def make_store(path: Path, users: dict[int, int]) -> Path:
    with SeqVault.open(path, schema=Schema.load(SCHEMA_PATH)) as v:
        for u, n in users.items():
            v.append(u, recent_events(n, seed=u))
        v.flush()
    return path


def seqvault_cli(*args: str, stdin: str | None = None, cwd: Path | None = None,
                 prefix: tuple[str, ...] = (), timeout: float = 120
                 ) -> subprocess.CompletedProcess[str]:
    """`python -m seqvault ARGS` in a subprocess (optionally under `prefix`, e.g. unshare)."""
    env = {**os.environ, "SEQVAULT_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*prefix, sys.executable, "-m", "seqvault", *args], input=stdin,
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The error message of a failed command: one line on stderr, never a traceback."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def _userns_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


USERNS = _userns_works()
needs_userns = pytest.mark.skipif(not USERNS, reason="needs `unshare -rm` (user + mount "
                                  "namespaces) to mount a read-only or a small filesystem")


# The real-uvicorn server fixture of tests/server (a session fixture, shared across folders).
try:
    from tests.server.conftest import serve  # noqa: E402,F401
except ImportError:  # the server extra is not installed: those tests skip themselves
    pass
