"""Generate the command-line reference (cli/README.md) from the commands' --help.

    python -m seqvault.cli.docs            # rewrite cli/README.md
    python -m seqvault.cli.docs --check    # exit 1 when cli/README.md is out of date

tests/cli/test_cli_docs.py fails when a command is missing from the reference or has no help.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

from ..errors import EXIT_CODES

HEADER = """# `seqvault` command-line reference

Generated from `--help` by `python -m seqvault.cli.docs`; do not edit by hand.

Every command takes `-h/--help`. The store is `--store DIR`, else `$SEQVAULT_STORE`, else
`./seqvault-store`. Data goes to stdout (a table on a terminal; `--json` / `--nl` for
machines), progress and messages to stderr; progress bars are off in pipes and when `CI` is
set. `NO_COLOR` is respected.

## Exit codes

| code | meaning |
|-----:|---------|
{codes}

## Shell completion

click generates completion scripts:

```sh
# bash (~/.bashrc)
eval "$(_SEQVAULT_COMPLETE=bash_source seqvault)"
# zsh (~/.zshrc)
eval "$(_SEQVAULT_COMPLETE=zsh_source seqvault)"
# fish (~/.config/fish/completions/seqvault.fish)
_SEQVAULT_COMPLETE=fish_source seqvault | source
```
"""


def walk(group: click.Group, prefix: tuple[str, ...] = ()
         ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and subcommand, depth first, in name order."""
    ctx = click.Context(group, info_name="seqvault")
    for name in sorted(group.list_commands(ctx)):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        path = (*prefix, name)
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, path)


def _context(cmd: click.Command, name: str, parent: click.Context | None) -> click.Context:
    settings = {"max_content_width": 100, "terminal_width": 100, **cmd.context_settings}
    return click.Context(cmd, info_name=name, parent=parent, **settings)


def help_text(path: tuple[str, ...], cmd: click.Command) -> str:
    """`seqvault PATH --help`, as the user sees it (100 columns)."""
    from .main import cli

    ctx = _context(cli, "seqvault", None)
    group: click.Command = cli
    for part in path:
        assert isinstance(group, click.Group)
        sub = group.get_command(ctx, part)
        assert sub is not None
        ctx = _context(sub, part, ctx)
        group = sub
    return cmd.get_help(ctx)


def render() -> str:
    from .main import cli

    codes = "\n".join(f"| {code} | {meaning} |" for meaning, code in
                      sorted(EXIT_CODES.items(), key=lambda kv: kv[1]))
    parts = [HEADER.format(codes=codes)]
    parts.append("## seqvault\n\n```text\n" + cli.get_help(_context(cli, "seqvault", None))
                 + "\n```\n")
    for path, cmd in walk(cli):
        parts.append(f"## seqvault {' '.join(path)}\n\n```text\n{help_text(path, cmd)}\n```\n")
    return "\n".join(parts)


def default_path() -> Path:
    return Path(__file__).resolve().parents[2] / "cli" / "README.md"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    out = Path(args[0]) if args else default_path()
    text = render()
    if check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is out of date: run python -m seqvault.cli.docs", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
