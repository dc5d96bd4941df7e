"""`seqvault repair`: salvage a damaged write-ahead log (docs/format/wal.md, "Repair").

Explicit, never automatic: a writer open refuses a damaged log and names this command.
"""

from __future__ import annotations

from typing import Any

import click

from .common import echo_json, json_option, store_option


def _describe(report: dict[str, Any]) -> list[str]:
    lines = []
    for p in report["problems"]:
        lines.append(f"DROPPED {p.get('path', '')}: {p['error']}")
    return lines


@click.command("repair")
@store_option
@click.option("--dry-run", is_flag=True, help="Only report what would be kept and dropped.")
@json_option
def repair_cmd(store: str, dry_run: bool, as_json: bool) -> None:
    """Salvage every good record of a damaged log and report what is dropped.

    Keeps every record whose checksum holds (also those after a damaged one), seals them into
    segments, starts a new log in one commit and keeps a copy of the old log in STORE/lost/.
    Afterwards the store verifies and opens for writing. Exit code 0 when the store needed no
    repair or was repaired; with --dry-run, 5 when the log is damaged.
    """
    from ..errors import CorruptionError
    from ..vault import SeqVault

    report = SeqVault.repair_log(store, dry_run=dry_run)
    report["store"] = store
    if as_json:
        echo_json(report)
    else:
        for line in _describe(report):
            click.echo(line)
        kept = f"{report['records']:,} good records"
        if report.get("events") is not None:
            kept += f" ({report['events']:,} events)"
        if not report["problems"]:
            click.echo(f"OK: the log is intact ({kept}); nothing to repair", err=True)
        elif report["repaired"]:
            dropped = report["dropped_events"]
            click.echo(f"Repaired: kept {kept}; dropped "
                       f"{'an unknown number of' if dropped is None else f'{dropped:,}'} events; "
                       f"the old log is saved as {report.get('saved_copy')}", err=True)
        else:
            click.echo(f"Dry run: a repair would keep {kept} and drop what is listed above",
                       err=True)
    if dry_run and report["problems"]:
        raise click.exceptions.Exit(CorruptionError.exit_code)
