"""Store commands: init, get, append, delete, merge, stats, info, ledger, schema show / evolve.

One command per method of the Python API (`SeqVault.open`, `read`, `append_batch`, `merge`,
`stats`, `evolve_schema`). Data goes to stdout, messages to stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import (
    ci_or_pipe,
    dumps,
    echo_json,
    json_option,
    nl_option,
    open_store,
    parse_columns,
    parse_user,
    progress_bar,
    stdout_is_terminal,
    store_option,
)


@click.command("init")
@store_option
@click.option("--schema", "schema_path", type=click.Path(dir_okay=False, exists=True),
              help="Schema TOML (default: the bundled behaviour-log schema).")
@click.option("--durability", type=click.Choice(["sync", "batch", "none"]), default=None,
              help="Append durability, persisted with the store (default: batch).")
def init_cmd(store: str, schema_path: str | None, durability: str | None) -> None:
    """Create an empty store with a schema."""
    from pathlib import Path

    from ..schema import Schema, bundled_schema_path

    if (Path(store) / "meta" / "data.mdb").exists():
        raise click.ClickException(f"{store} is already a SeqVault store; change its schema with "
                                   "`seqvault schema evolve FILE`")
    if schema_path is None:
        schema_path = str(bundled_schema_path())
        click.echo(f"Using the bundled schema {schema_path}", err=True)
    schema = Schema.load(schema_path)
    from ..vault import SeqVault

    with SeqVault.open(store, schema=schema, durability=durability):
        pass
    click.echo(f"Created {store} (user column {schema.user_column!r}, "
               f"{len(schema.columns)} event columns)", err=True)


@click.command("get")
@store_option
@click.argument("user")
@click.option("--last", "-n", type=click.IntRange(1, None), default=None,
              help="Only the newest N events.")
@click.option("--columns", "-c", default=None, help="Comma-separated columns (default: all).")
@click.option("--before", type=int, default=None, help="Only events with ts < TS.")
@click.option("--since", type=int, default=None, help="Only events with ts >= TS.")
@json_option
@nl_option
def get_cmd(store: str, user: str, last: int | None, columns: str | None, before: int | None,
            since: int | None, as_json: bool, as_nl: bool) -> None:
    """Read one user's events (ascending time): a table on a terminal, else JSON.

    --json prints one object with an array per column; --nl prints one JSON object per event.
    """
    with open_store(store) as vault:
        key = parse_user(vault.schema, user)
        seq = vault.read(key, last=last, columns=parse_columns(columns), before=before,
                         since=since)
        cols = {k: v.tolist() for k, v in seq.items()}
    if as_nl:
        names = list(cols)
        out = sys.stdout
        for i in range(len(seq)):
            out.write(dumps({n: cols[n][i] for n in names}) + "\n")
        out.flush()
        return
    if as_json or not stdout_is_terminal():
        # The same keys as HTTP's JSON body (`user_id`, `count`, `columns`).
        echo_json({"user_id": key, "count": len(seq), "columns": cols})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"user {key}: {len(seq)} events", title_justify="left")
    for n in cols:
        table.add_column(n, justify="left" if isinstance((cols[n] or [""])[0], str) else "right")
    for i in range(len(seq)):
        table.add_row(*(str(cols[n][i]) for n in cols))
    Console().print(table)


@click.command("append")
@store_option
@click.option("--batch-size", type=click.IntRange(1, None), default=10_000, show_default=True,
              help="Lines per append_batch call (each call is atomic).")
@json_option
def append_cmd(store: str, batch_size: int, as_json: bool) -> None:
    """Append events from JSON lines on stdin (one event per line, with the user column).

    Example: echo '{"user_id": 1, "ts": 1700000000000, "item_id": 5, ...}' | seqvault append
    """
    import json

    from ..errors import ValidationError

    total, lines = 0, 0
    with open_store(store, read_only=False) as vault:
        batch: list[dict[str, Any]] = []
        first_line = 1

        def flush() -> int:
            if not batch:
                return 0
            names: dict[str, None] = {}
            for ev in batch:
                names.update(dict.fromkeys(ev))
            columns = {n: [ev.get(n) for ev in batch] for n in names}
            try:
                return vault.append_batch(columns)
            except ValidationError as exc:
                where = f"stdin line {first_line + exc.row}" if exc.row is not None else \
                    f"stdin lines {first_line}..{first_line + len(batch) - 1}"
                raise ValidationError(f"{where}: {exc} (lines before {first_line} were "
                                      "appended)", column=exc.column, value=exc.value) from None

        for raw in sys.stdin:
            lines += 1
            if not raw.strip():
                continue
            try:
                ev = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"stdin line {lines}: not JSON ({exc.msg}); expected one "
                                      "event object per line") from None
            if not isinstance(ev, dict):
                raise ValidationError(f"stdin line {lines}: expected a JSON object, got "
                                      f"{type(ev).__name__}")
            if not batch:
                first_line = lines
            batch.append(ev)
            if len(batch) >= batch_size:
                total += flush()
                batch = []
        total += flush()
    if as_json:
        echo_json({"appended": total, "lines": lines})
    else:
        click.echo(f"Appended {total} events from {lines} lines", err=True)


@click.command("delete")
@click.argument("user")
@store_option
@click.option("--before", type=int, default=None, metavar="TS",
              help="Delete only the user's events with ts < TS (default: all of them).")
@json_option
def delete_cmd(user: str, store: str, before: int | None, as_json: bool) -> None:
    """Delete a user's events, all or older than --before (vault.delete).

    Reads return nothing (or only the newer events) at once; the bytes leave the store's
    files at the next `seqvault merge`. An unknown user is not an error: 0 events deleted."""
    with open_store(store, read_only=False) as vault:
        key = parse_user(vault.schema, user)
        removed = vault.delete(key, before=before)
        pending = vault.stats()["delete_pending_files"]
    result = {"user_id": key, "deleted_events": removed, "before": before}
    if as_json:
        echo_json(result)
        return
    what = "events" if before is None else f"events with ts < {before}"
    click.echo(f"Deleted {removed:,} {what} of user {key!r} from {store}"
               + ("; their bytes leave the store files at the next `seqvault merge`"
                  if removed and pending else ""), err=True)


@click.command("merge")
@store_option
@click.option("--user", "-u", "users", multiple=True,
              help="Only this user (repeatable; default: every user with work to do).")
@click.option("--reclaim/--no-reclaim", default=True, show_default=True,
              help="Rewrite mostly-dead files and delete files nothing refers to.")
@click.option("--reclaim-ratio", type=click.FloatRange(0.0, 1.0), default=None,
              help="Rewrite files whose live ratio is below this (default: the store's "
                   "setting).")
@click.option("--worker", type=click.Choice(["thread", "process"]), default="thread",
              show_default=True,
              help="Decode and encode in this process or in a merge process.")
@click.option("--nice", type=click.IntRange(0, 19), default=0, show_default=True,
              help="CPU niceness of the merge work (higher: other processes go first).")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar on stderr (default: on a terminal, and not with --json).")
@json_option
def merge_cmd(store: str, users: tuple[str, ...], reclaim: bool, reclaim_ratio: float | None,
              worker: str, nice: int, show_progress: bool | None, as_json: bool) -> None:
    """Fold real-time segments into lifetime segments and apply retention (vault.merge)."""
    enabled = (not ci_or_pipe() and not as_json) if show_progress is None else show_progress
    with open_store(store, read_only=False) as vault:
        keys = [parse_user(vault.schema, u) for u in users] or None
        if not enabled:
            click.echo(f"Merging {'all users with work to do' if keys is None else f'{len(keys)} users'}"
                       f" in {store} ...", err=True)
        with progress_bar(enabled) as update:
            result = vault.merge(keys, reclaim=reclaim, reclaim_ratio=reclaim_ratio,
                                 worker=worker, nice=nice, progress=update)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"Merged {result['users_merged']:,} users: {result['events_in']:,} -> "
                   f"{result['events_out']:,} events, {result['segments_in']:,} -> "
                   f"{result['segments_out']:,} segments, "
                   f"{result['files_reclaimed']} files reclaimed, "
                   f"in {result['seconds']:.1f} s", err=True)


def _print_mapping(title: str, data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in data.items():
        table.add_row(k, v if isinstance(v, str) else dumps(v))
    Console().print(table)


@click.command("stats")
@store_option
@json_option
def stats_cmd(store: str, as_json: bool) -> None:
    """Counts and sizes: users, events, segments, bytes on disk, index bytes per user."""
    with open_store(store) as vault:
        stats = vault.stats()
    if as_json or not stdout_is_terminal():
        echo_json(stats)  # raw numbers (bytes, counts) for machines
    else:
        _print_mapping(f"SeqVault store {stats['path']}", humanize_stats(stats))


def humanize_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """Byte counts in KiB/MiB/GiB and counts with thousands separators, for people."""
    from .common import human_bytes

    out: dict[str, Any] = {}
    for k, v in stats.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            out[k] = v
        elif k.endswith("_bytes"):
            out[k] = human_bytes(v)
        elif k.endswith("_per_user"):
            out[k] = f"{v:,.1f} B" if "bytes" in k else f"{v:,.1f}"
        elif isinstance(v, int):
            out[k] = f"{v:,}"
        else:
            out[k] = f"{v:,.3g}"
    return out


@click.command("info")
@store_option
@json_option
def info_cmd(store: str, as_json: bool) -> None:
    """The store's schema, settings, format version and ingest ledger size."""
    from ..ingest.ledger import entries

    with open_store(store) as vault:
        fmt = vault.manifest.format_version
        stats = vault.stats()
        info = {
            "path": str(vault.path),
            "format_version": fmt,
            "schema": vault.schema.to_dict(),
            "settings": dict(vault.settings),
            "ingested_files": len(entries(vault)),
            "users": stats["users"],
            "events": stats["events"],
        }
    if as_json or not stdout_is_terminal():
        echo_json(info)
    else:
        _print_mapping(f"SeqVault store {info['path']}", info)


@click.command("ledger")
@store_option
@json_option
def ledger_cmd(store: str, as_json: bool) -> None:
    """Files ingested into the store (by content fingerprint), oldest first."""
    from ..ingest.ledger import entries

    with open_store(store) as vault:
        items = entries(vault)
    if as_json or not stdout_is_terminal():
        echo_json(items)
        return
    import time

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(items)} ingested files", title_justify="left")
    for col in ("ingested (UTC)", "path", "rows", "bytes", "fingerprint", "times"):
        table.add_column(col)
    for e in items:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["ingested_ns"] / 1e9))
        table.add_row(when, e["path"], str(e["rows"]), str(e["size"]),
                      e["fingerprint"][:16] + "…", str(e.get("times", 1)))
    Console().print(table)


@click.group("schema")
def schema_group() -> None:
    """Show or evolve the store's schema."""


@schema_group.command("show")
@store_option
@json_option
@click.option("--history", is_flag=True, help="Every schema version, oldest first.")
def schema_show(store: str, as_json: bool, history: bool) -> None:
    """Print the store's schema (TOML; --json for JSON)."""
    with open_store(store) as vault:
        schemas = vault.schema_history() if history else [vault.schema]
    if as_json:
        echo_json([s.to_dict() for s in schemas] if history else schemas[0].to_dict())
    else:
        click.echo("\n".join(s.to_toml() for s in schemas), nl=False)


@schema_group.command("evolve")
@store_option
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
def schema_evolve(store: str, file: str) -> None:
    """Adopt a new schema FILE: add columns (with defaults) or change retention."""
    from ..schema import Schema

    new = Schema.load(file)
    with open_store(store, read_only=False) as vault:
        before = vault.schema.version
        evolved = vault.evolve_schema(new)
    if evolved.version == before:
        click.echo(f"Schema unchanged (version {before})", err=True)
    else:
        click.echo(f"Schema evolved: version {before} -> {evolved.version}", err=True)


COMMANDS = (init_cmd, get_cmd, append_cmd, delete_cmd, merge_cmd, stats_cmd, info_cmd, ledger_cmd,
            schema_group)


def register(cli: click.Group) -> None:
    for cmd in COMMANDS:
        cli.add_command(cmd)
