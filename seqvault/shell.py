"""How to spell the `seqvault` command in the user's shell (printed by `make demo`)."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path


def seqvault_command() -> str:
    """How to type `seqvault` in this shell: plain `seqvault` when it is on PATH and is this
    installation's, else the path of this virtual environment's script (`make demo` runs from
    .venv without activating it, so a bare `seqvault` would be "command not found")."""
    script = Path(sys.executable).parent / "seqvault"
    found = shutil.which("seqvault")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "seqvault"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m seqvault"
    try:
        rel = script.relative_to(Path.cwd())
    except ValueError:
        return shlex.quote(str(script))
    return shlex.quote(str(rel))
