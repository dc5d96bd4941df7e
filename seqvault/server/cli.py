"""Registration hook for seqvault/cli/registry.py: adds `seqvault serve` (imports click only)."""

from __future__ import annotations

import click

from ..cli.serve import serve


def register(cli: click.Group) -> None:
    cli.add_command(serve)
