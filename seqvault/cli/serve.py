"""`seqvault serve`: the HTTP service (FastAPI + uvicorn) over one store.

Only click is imported at module level; uvicorn and FastAPI are imported when the command
runs. Workers are uvicorn processes built by `seqvault.server.app:app_from_env`, which reads
the options from SEQVAULT_SERVE_* variables. Process model: docs/design/http.md.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import click

DEFAULT_MAX_LAST = 100_000  # keep in step with seqvault.server.app.DEFAULT_MAX_LAST
DEFAULT_MAX_BODY_BYTES = 64 << 20


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--store", "-s", "store", envvar="SEQVAULT_STORE", default="./seqvault-store",
              show_default=True, type=click.Path(file_okay=False),
              help="Store directory (else $SEQVAULT_STORE).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback exposes the store to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes, each with its own read-only open of the store.")
@click.option("--allow-writes", is_flag=True,
              help="Open the store as its writer and accept POSTed events (one worker only; "
                   "needs --token-file).")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True),
              help="File holding the bearer token that writes must present.")
@click.option("--max-last", default=DEFAULT_MAX_LAST, show_default=True,
              type=click.IntRange(1), help="Largest `last` a request may ask for.")
@click.option("--max-body-bytes", default=DEFAULT_MAX_BODY_BYTES, show_default=True,
              type=click.IntRange(1), help="Request bodies above this get 413.")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every request (costs throughput).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--fd", type=int, default=None, hidden=True,
              help="Serve on an inherited, already-bound socket (tests, demo).")
def serve(store: str, host: str, port: int, workers: int, allow_writes: bool,
          token_file: str | None, max_last: int, max_body_bytes: int, access_log: bool,
          log_level: str, fd: int | None) -> None:
    """Serve the store over HTTP (GET /users/{id}/sequence, batchGet, /metrics, /docs).

    Read-only by default; several --workers share the store (each opens it read-only and sees
    new commits within the store's refresh_interval, 50 ms by default).
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise click.ClickException(
            f"`seqvault serve` needs the server extra ({exc.name} is missing): "
            "pip install 'seqvault[server]'") from None
    try:
        import fastapi  # noqa: F401
    except ImportError:
        raise click.ClickException("`seqvault serve` needs FastAPI: "
                                   "pip install 'seqvault[server]'") from None
    from ..vault import SeqVault

    if allow_writes:
        if not token_file:
            raise click.UsageError("--allow-writes needs --token-file F (writes must present "
                                   "Authorization: Bearer <token from F>)")
        if workers != 1:
            raise click.UsageError("--allow-writes serves from one worker (the store has one "
                                   "writer); drop --workers or serve reads separately")
        mode = os.stat(token_file).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            click.echo(f"warning: {token_file} is readable by other users (chmod 600 it)",
                       err=True)
        if not Path(token_file).read_text().strip():
            raise click.UsageError(f"--token-file {token_file}: the file is empty")
    elif token_file:
        click.echo("note: --token-file has no effect without --allow-writes", err=True)
    if not _is_loopback(host):
        click.echo(f"warning: binding to {host}: the store is reachable from the network; "
                   "put TLS and authentication in front of it", err=True)

    # Fail fast (exit code 7 etc.) when the path is not a store, instead of a 503 forever.
    SeqVault.open(store, read_only=True, create=False).close()

    os.environ["SEQVAULT_SERVE_STORE"] = str(Path(store).resolve())
    os.environ["SEQVAULT_SERVE_ALLOW_WRITES"] = "1" if allow_writes else "0"
    os.environ["SEQVAULT_SERVE_MAX_LAST"] = str(max_last)
    os.environ["SEQVAULT_SERVE_MAX_BODY_BYTES"] = str(max_body_bytes)
    if allow_writes and token_file:
        os.environ["SEQVAULT_SERVE_TOKEN_FILE"] = str(Path(token_file).resolve())
    else:
        os.environ.pop("SEQVAULT_SERVE_TOKEN_FILE", None)
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics then sums every worker's counters (prometheus-client multiprocess mode).
        metrics_dir = tempfile.mkdtemp(prefix="seqvault-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        # http=: uvicorn's protocol plus TCP_NODELAY (seqvault/server/protocol.py says why)
        uvicorn.run("seqvault.server.app:app_from_env", factory=True, host=host, port=port,
                    fd=fd, workers=workers, access_log=access_log, log_level=log_level,
                    timeout_graceful_shutdown=5,
                    http="seqvault.server.protocol:NoDelayHTTPProtocol")
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.stdout.flush()
