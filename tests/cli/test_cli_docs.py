"""The generated CLI reference (cli/README.md) documents every command, and every command has
help. Regenerate with `python -m seqvault.cli.docs`."""

from __future__ import annotations

from pathlib import Path

import click

from seqvault.cli.docs import help_text, render, walk
from seqvault.cli.main import cli

REFERENCE = Path(__file__).resolve().parents[2] / "cli" / "README.md"
EXPECTED = {"init", "ingest", "get", "append", "merge", "stats", "info", "verify", "export",
            "schema", "schema show", "schema evolve", "ledger"}


def test_every_command_has_help():
    for path, cmd in walk(cli):
        text = (cmd.help or cmd.short_help or "").strip()
        assert text, f"`seqvault {' '.join(path)}` has no help"
        assert "-h, --help" in help_text(path, cmd), path


def test_every_command_is_in_the_generated_reference():
    text = REFERENCE.read_text()
    paths = {" ".join(p) for p, _c in walk(cli)}
    assert EXPECTED <= paths
    missing = [p for p in sorted(paths) if f"## seqvault {p}\n" not in text]
    assert not missing, (f"commands missing from {REFERENCE}: {missing}; run "
                         "`python -m seqvault.cli.docs`")
    for section in ("## Exit codes", "## Shell completion", "_SEQVAULT_COMPLETE"):
        assert section in text


def test_reference_is_generated_from_help():
    # Sections for this commands are exactly the --help output.
    generated = render()
    text = REFERENCE.read_text()
    for path, cmd in walk(cli):
        if " ".join(path) in EXPECTED:
            block = f"## seqvault {' '.join(path)}\n\n```text\n{help_text(path, cmd)}\n```\n"
            assert block in generated
            assert block in text, f"stale section for `seqvault {' '.join(path)}`"


def test_a_command_without_help_is_caught():
    group = click.Group("x")

    @group.command("nohelp")
    def nohelp() -> None:
        pass

    assert [p for p, c in walk(group) if not (c.help or c.short_help)] == [("nohelp",)]


def test_help_imports_no_heavy_modules():
    # STYLE.md: pyarrow, rich, fastapi, torch are imported inside the commands that need them.
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom seqvault.cli.main import cli\n"
            "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pyarrow', 'rich', 'fastapi', 'torch', 'uvicorn') "
            "if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
