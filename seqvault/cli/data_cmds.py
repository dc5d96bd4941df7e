"""Bulk data commands: ingest (files → store), export (store → Parquet), verify (checksums).

These are the long-running commands: each shows a progress bar on a terminal (stderr) and is
quiet in pipes and CI.
"""

from __future__ import annotations

from typing import Any

import click

from .common import (
    ci_or_pipe,
    echo_json,
    human_bytes,
    json_option,
    open_store,
    parse_columns,
    progress_bar,
    store_option,
)


def _schema_for_new_store(paths: list[str], schema_path: str | None, user_column: str,
                          time_column: str, time_unit: str | None) -> Any:
    from ..ingest.sources import InputFile, expand_paths
    from ..schema import Schema

    if schema_path:
        return Schema.load(schema_path)
    files = expand_paths(list(paths))
    f = InputFile.open(files[0])
    arrow_schema = f.arrow_schema
    if arrow_schema is None:  # CSV / JSON lines: infer from the first block
        first = next(f.batches(None, 1 << 16), None)
        if first is None:
            raise click.ClickException(f"{files[0]} is empty: cannot infer a schema; "
                                       "pass --schema FILE")
        arrow_schema = first.data.schema
    schema = Schema.from_arrow(arrow_schema, user_column=user_column, time_column=time_column,
                               time_unit=time_unit)
    click.echo(f"Inferred a schema from {files[0]} (user {user_column!r}, time {time_column!r},"
               f" {len(schema.columns)} columns); see it with `seqvault schema show`", err=True)
    return schema


def _remove_if_empty(store: Any) -> None:
    """Remove a store this command created when the ingest failed before publishing anything
    and no other process opened it meanwhile, so that the rerun (say with --time-unit s, as a
    refused timestamp suggests) infers its schema afresh instead of finding an empty store."""
    import shutil

    from ..errors import SeqVaultError
    from ..vault import SeqVault
    from .common import store_in_use

    if not store.exists() or store_in_use(store) is not None:
        return
    try:
        with SeqVault.open(store, read_only=True) as v:
            empty = v.stats()["events"] == 0
    except (SeqVaultError, OSError):
        empty = False
    if empty and store_in_use(store) is None:
        shutil.rmtree(store, ignore_errors=True)


def _ingest_into(store: str, schema: Any, paths: list[str], force: bool, enabled: bool,
                 partition_rows: int, spill_compression: str, expired: str) -> Any:
    from ..ingest import ingest
    from ..vault import SeqVault

    with SeqVault.open(store, schema=schema) as vault:
        with progress_bar(enabled) as update:
            summary = ingest(vault, paths, force=force, progress=update,
                             rows_per_partition=partition_rows,
                             spill_compression=None if spill_compression == "none"
                             else spill_compression, expired=expired)
        try:
            vault.close()  # the index checkpoint; the ingest itself is committed already
        except Exception as exc:
            # Say so: a user who reruns a committed ingest would store its events twice.
            raise click.ClickException(
                f"ingested {summary.events:,} events (committed and durable), but closing "
                f"{store} failed: {exc}. The data is safe (the next open replays the index "
                "from the committed metadata); do not ingest these files again") from exc
    return summary


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@store_option
@click.option("--schema", "schema_path", type=click.Path(dir_okay=False, exists=True),
              help="Schema TOML (else the store's, else inferred from the data).")
@click.option("--user-column", default="user_id", show_default=True,
              help="User column, when inferring the schema.")
@click.option("--time-column", default="ts", show_default=True,
              help="Time column, when inferring the schema.")
@click.option("--time-unit", type=click.Choice(["s", "ms", "us", "ns"]), default=None,
              help="Unit of an integer time column, when inferring (default ms).")
@click.option("--force", is_flag=True,
              help="Ingest even files whose content is already in the ledger (stored twice).")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar on stderr (default: on a terminal, off in pipes and CI).")
@click.option("--partition-rows", type=click.IntRange(10_000, None), default=1_000_000,
              show_default=True, help="Rows per spill partition (bounds memory).")
@click.option("--spill-compression", type=click.Choice(["auto", "lz4", "zstd", "none"]),
              default="auto", show_default=True,
              help="Compression of the temporary spill files (auto: none while they would "
                   "use under a quarter of the free disk, else lz4).")
@click.option("--expired", type=click.Choice(["refuse", "drop"]), default="refuse",
              show_default=True,
              help="Rows older than the schema's retention max_age (reads would never return "
                   "them): refuse the ingest (exit 3), or drop them and report how many.")
@json_option
def ingest_cmd(paths: tuple[str, ...], store: str, schema_path: str | None, user_column: str,
               time_column: str, time_unit: str | None, force: bool,
               show_progress: bool | None, partition_rows: int, spill_compression: str,
               expired: str, as_json: bool) -> None:
    """Load Parquet files or directories (also CSV, JSON lines) into the store, atomically.

    Rows may come in any order; each user's events are stored by time, ties in input order
    (files in the order given). The store is created when missing. A file whose content was
    ingested before is refused (exit 9) unless --force. Nothing is published unless the whole
    ingest succeeds.
    """
    from pathlib import Path

    exists = (Path(store) / "meta" / "data.mdb").exists()
    schema = None
    if not exists or schema_path:
        schema = _schema_for_new_store(list(paths), schema_path, user_column, time_column,
                                       time_unit)
    enabled = (not ci_or_pipe()) if show_progress is None else show_progress
    created = not Path(store).exists()
    try:
        summary = _ingest_into(store, schema, list(paths), force, enabled, partition_rows,
                               spill_compression, expired)
    except BaseException:
        if created:
            _remove_if_empty(Path(store))
        raise
    data = summary.to_dict()
    data["store"] = store
    if as_json:
        echo_json(data)
        return
    s = summary
    click.echo(
        f"Ingested {s.events:,} events for {s.users:,} users from {len(s.files)} file(s) "
        f"in {s.elapsed_s:.1f} s ({s.events_per_s:,.0f} events/s)\n"
        f"  read {human_bytes(s.input_bytes)}, wrote {human_bytes(s.bytes_written)} "
        f"(compression {s.compression_ratio:.1f}x of {human_bytes(s.raw_bytes)} raw columns), "
        f"peak memory {human_bytes(s.peak_rss_bytes)}", err=True)
    if s.ignored_columns:
        click.echo(f"  ignored columns not in the schema: {', '.join(s.ignored_columns)}",
                   err=True)
    if s.dropped_expired:
        click.echo(f"  dropped {s.dropped_expired:,} events older than the retention window "
                   "(--expired drop)", err=True)


@click.command("export")
@click.argument("out", type=click.Path(dir_okay=False))
@store_option
@click.option("--user", "-u", "users", multiple=True, help="Only this user (repeatable).")
@click.option("--users-file", type=click.File("r"), default=None,
              help="Only the users listed in this file, one per line.")
@click.option("--columns", "-c", default=None, help="Comma-separated columns (default: all).")
@click.option("--since", type=int, default=None, help="Only events with ts >= TS.")
@click.option("--before", type=int, default=None, help="Only events with ts < TS.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None,
              help="Reader processes (default: one per idle core, up to 8, for 500k+ events).")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar on stderr (default: on a terminal).")
@json_option
def export_cmd(out: str, store: str, users: tuple[str, ...], users_file: Any,
               columns: str | None, since: int | None, before: int | None,
               jobs: int | None, show_progress: bool | None, as_json: bool) -> None:
    """Write users' events to a Parquet file OUT (all users, or some), atomically.

    One row per event with the user column first; users are written one after another, each
    in ascending time (what `get` returns, retention applied). OUT appears only when complete:
    a failed export leaves an existing OUT untouched and removes its temporary file.
    """
    from .common import parse_user
    from .export import default_jobs, export_parquet

    enabled = (not ci_or_pipe()) if show_progress is None else show_progress
    with open_store(store) as vault, progress_bar(enabled) as update:
        schema = vault.schema
        wanted = list(users)
        if users_file is not None:
            wanted += [line.strip() for line in users_file if line.strip()]
        names = parse_columns(columns) or schema.column_names
        unknown = [n for n in names if n not in schema.column_names]
        if unknown:
            raise click.BadParameter(f"unknown column(s) {unknown}; the schema has "
                                     f"{schema.column_names}", param_hint="--columns")
        if schema.time_column not in names:
            names = [schema.time_column, *names]
        names = list(dict.fromkeys(names))
        keys: list[Any] = ([parse_user(schema, u) for u in wanted] if wanted
                           else list(vault.users()))
        if jobs is None:
            jobs = default_jobs(vault.stats()["events"] if not wanted else 0)
        result = export_parquet(vault, out, keys, names, since=since, before=before,
                                jobs=jobs, progress=update)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"Exported {result['events']:,} events of {result['users']:,} users to "
                   f"{out} ({human_bytes(result['bytes'])})", err=True)


@click.command("verify")
@store_option
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar on stderr (default: on a terminal, and not with --json).")
@json_option
def verify_cmd(store: str, show_progress: bool | None, as_json: bool) -> None:
    """Check every checksum of every segment, and the index, against the files.

    Also the write-ahead log: a log that was cut, has damaged records or is missing is listed
    with its byte range, record numbers and events (repair it with `seqvault repair`).
    Exit code 5 when corruption is found (each bad file/user is listed); 0 when all is well.
    """
    from ..errors import CorruptionError

    enabled = (not ci_or_pipe() and not as_json) if show_progress is None else show_progress
    with open_store(store) as vault, progress_bar(enabled) as update:
        report = vault.verify(update)
    report["store"] = store
    if as_json:
        echo_json(report)
    else:
        for p in report["problems"]:
            who = f" user {p['user_id']!r}" if p.get("user_id") is not None else ""
            click.echo(f"CORRUPT {p.get('path', '')}{who}: {p['error']}")
        status = "OK" if report["ok"] else f"{len(report['problems'])} problem(s)"
        click.echo(f"{status}: {report['users']:,} users, {report['segments']:,} segments, "
                   f"{human_bytes(report['bytes_checked'])} checked", err=True)
    if not report["ok"]:
        raise click.exceptions.Exit(CorruptionError.exit_code)


COMMANDS = (ingest_cmd, export_cmd, verify_cmd)


def register(cli: click.Group) -> None:
    for cmd in COMMANDS:
        cli.add_command(cmd)
