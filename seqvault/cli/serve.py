"""`seqvault serve`: the HTTP service (FastAPI + uvicorn) over one store.

Only click is imported at module level; uvicorn and FastAPI are imported when the command
runs. Workers are uvicorn processes built by `seqvault.server.app:app_from_env`, which reads
the options from SEQVAULT_SERVE_* variables. Process model: docs/design/http.md.

Exit codes (also in `--help`): 0 stopped by a signal; 1 the server failed (a worker could not
start); 2 usage; the store's own codes from 3 up when the path cannot be served (7: not a
store, 5: corruption, 6: format version); 10 the address cannot be listened on (in use,
not permitted, not an address of this host).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path

import click

DEFAULT_MAX_LAST = 100_000  # keep in step with seqvault.server.app.DEFAULT_MAX_LAST
DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_MAX_BATCH_USERS = 1_000  # keep in step with seqvault.server.app
DEFAULT_MAX_RESPONSE_EVENTS = 1_000_000
DEFAULT_MAX_RESPONSE_BYTES = 128 << 20
DEFAULT_MAX_INFLIGHT = 256
EXIT_SERVER_FAILED = 1
EXIT_CANNOT_LISTEN = 10


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """Bind and listen here, so that a port in use is our documented exit code 10 instead of
    uvicorn's 3 (which this CLI reserves for schema and validation errors)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
    except (OSError, socket.gaierror) as exc:
        why = ("the address is already in use" if getattr(exc, "errno", None) == errno.EADDRINUSE
               else str(exc))
        click.echo(f"Error: cannot listen on {host}:{port}: {why}", err=True)
        sys.exit(EXIT_CANNOT_LISTEN)
    sock.set_inheritable(True)
    return sock


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
@click.option("--max-batch-users", default=DEFAULT_MAX_BATCH_USERS, show_default=True,
              type=click.IntRange(1), help="Most ids in one batchGet.")
@click.option("--max-response-events", default=DEFAULT_MAX_RESPONSE_EVENTS, show_default=True,
              type=click.IntRange(1),
              help="Budget of one batchGet: distinct users x last above this get 422.")
@click.option("--max-response-bytes", default=DEFAULT_MAX_RESPONSE_BYTES, show_default=True,
              type=click.IntRange(1), help="Most bytes of one response body.")
@click.option("--max-inflight", default=DEFAULT_MAX_INFLIGHT, show_default=True,
              type=click.IntRange(1),
              help="Requests one worker works on at once; more get 503 at once.")
@click.option("--header-timeout", default=10.0, show_default=True, type=click.FloatRange(0),
              help="Seconds for a request head to arrive, from connect or its first byte "
                   "(0: none). Slow or idle clients are answered 408 and closed.")
@click.option("--body-timeout", default=60.0, show_default=True, type=click.FloatRange(0),
              help="Seconds for a request body to arrive after its head (0: none).")
@click.option("--keepalive-timeout", default=5, show_default=True, type=click.IntRange(1),
              help="Seconds an idle keep-alive connection stays open.")
@click.option("--max-connections", default=1024, show_default=True, type=click.IntRange(1),
              help="Open connections per worker; more are answered 503 and closed.")
@click.option("--backlog", default=2048, show_default=True, type=click.IntRange(1),
              help="Connections the kernel queues before the server accepts them.")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every request (costs throughput).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--fd", type=int, default=None, hidden=True,
              help="Serve on an inherited, already-bound socket (tests, demo).")
def serve(store: str, host: str, port: int, workers: int, allow_writes: bool,
          token_file: str | None, max_last: int, max_body_bytes: int, max_batch_users: int,
          max_response_events: int, max_response_bytes: int, max_inflight: int,
          header_timeout: float, body_timeout: float, keepalive_timeout: int,
          max_connections: int, backlog: int, access_log: bool, log_level: str,
          fd: int | None) -> None:
    """Serve the store over HTTP (GET /users/{id}/sequence, batchGet, /metrics, /docs).

    Read-only by default; several --workers share the store (each opens it read-only and sees
    new commits within the store's refresh_interval, 50 ms by default).

    Exit codes: 0 stopped by a signal, 1 the server failed, 2 usage, 5/6/7 the store cannot
    be served (corruption, format version, not a store), 10 cannot listen on HOST:PORT.
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

    if max_last > max_response_events:
        raise click.UsageError(f"--max-last {max_last} is over --max-response-events "
                               f"{max_response_events}: one user's read must fit the budget")
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
    os.environ["SEQVAULT_SERVE_MAX_BATCH_USERS"] = str(max_batch_users)
    os.environ["SEQVAULT_SERVE_MAX_RESPONSE_EVENTS"] = str(max_response_events)
    os.environ["SEQVAULT_SERVE_MAX_RESPONSE_BYTES"] = str(max_response_bytes)
    os.environ["SEQVAULT_SERVE_MAX_INFLIGHT"] = str(max_inflight)
    from ..server.protocol import ConnectionLimits

    # Workers (spawned processes) build their protocol from these variables.
    os.environ.update(ConnectionLimits(header_timeout=header_timeout, body_timeout=body_timeout,
                                       max_connections=max_connections).to_env())
    if allow_writes and token_file:
        os.environ["SEQVAULT_SERVE_TOKEN_FILE"] = str(Path(token_file).resolve())
    else:
        os.environ.pop("SEQVAULT_SERVE_TOKEN_FILE", None)
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics then sums every worker's counters (prometheus-client multiprocess mode).
        metrics_dir = tempfile.mkdtemp(prefix="seqvault-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    listener = _listen(host, port, backlog) if fd is None else None
    try:
        # http=: uvicorn's protocol plus TCP_NODELAY and the connection deadlines
        # (seqvault/server/protocol.py says why)
        uvicorn.run("seqvault.server.app:app_from_env", factory=True,
                    fd=listener.fileno() if listener is not None else fd, workers=workers,
                    access_log=access_log, log_level=log_level, timeout_graceful_shutdown=5,
                    timeout_keep_alive=keepalive_timeout, backlog=backlog,
                    http="seqvault.server.protocol:NoDelayHTTPProtocol")
    except SystemExit as exc:
        # uvicorn exits 3 when a worker fails to start; that code means "schema error" here
        if exc.code not in (0, None):
            sys.exit(EXIT_SERVER_FAILED)
        raise
    finally:
        if listener is not None:
            listener.close()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.stdout.flush()
