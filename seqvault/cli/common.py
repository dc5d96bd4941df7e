"""Shared pieces of the commands: the --store option, output options, store opening, progress.

Only click (and the engine) are imported here; pyarrow and rich are imported inside the
functions that need them, so `seqvault --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

if TYPE_CHECKING:
    from ..schema import Schema
    from ..vault import SeqVault

DEFAULT_STORE = "./seqvault-store"

# The store the running command works on: a filesystem error without a file name (a failed
# write to an open descriptor) is then still reported with a path.
_CURRENT_STORE: list[str] = []


def _remember_store(ctx: click.Context, param: click.Parameter, value: str) -> str:
    _CURRENT_STORE[:] = [value]
    return value


store_option = click.option(
    "--store", "-s", "store", envvar="SEQVAULT_STORE", default=DEFAULT_STORE,
    show_default=True, type=click.Path(file_okay=False), callback=_remember_store,
    help="Store directory (else $SEQVAULT_STORE, else ./seqvault-store).")


def current_store() -> str | None:
    return _CURRENT_STORE[0] if _CURRENT_STORE else None


def describe_os_error(exc: OSError) -> tuple[str, int]:
    """A filesystem error as one line naming the path, and its exit code: 8 (read-only
    store) for a read-only filesystem, else 1. Used by `main` instead of a traceback."""
    import errno

    from ..errors import ReadOnlyError

    path = exc.filename or current_store()
    where = f" {path}" if path else ""
    reason = exc.strerror or str(exc)
    code = exc.errno
    if code is None:  # pyarrow's IOError puts "[errno 28] ..." in the message only
        for candidate in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            if f"errno {candidate}]" in str(exc).lower():
                code = candidate
    if code is not None and (not exc.strerror or "errno" in exc.strerror.lower()):
        reason = os.strerror(code)  # pyarrow: "Error writing bytes... Detail: [errno 28] ..."
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"disk full: cannot write{where} ({reason}); free some space and retry "
                "(an interrupted ingest publishes nothing and removes its temporary files)", 1)
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied:{where} ({reason}); check the owner and mode of that path "
                "and its parent directories", 1)
    if code == errno.EROFS:
        return (f"read-only filesystem:{where} cannot be written; commands that only read "
                "(get, stats, verify, export) work on a store there", ReadOnlyError.exit_code)
    if code == errno.ENOENT:
        return f"no such file or directory:{where}", 1
    return f"{reason}:{where}" if where else reason, 1

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Machine-readable JSON on stdout.")
nl_option = click.option("--nl", "as_nl", is_flag=True,
                         help="Newline-delimited JSON: one object per line.")


def ci_or_pipe() -> bool:
    """True when progress bars must stay quiet: stderr is not a terminal, or CI is set."""
    if os.environ.get("CI") or os.environ.get("SEQVAULT_NO_PROGRESS"):
        return True
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):
        return True


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, bytes):
        return o.hex()
    return str(o)


def dumps(obj: Any, *, indent: int | None = None) -> str:
    return json.dumps(obj, default=_default, indent=indent, ensure_ascii=False)


def echo_json(obj: Any) -> None:
    click.echo(dumps(obj, indent=2 if stdout_is_terminal() else None))


def open_store(path: str, *, read_only: bool = True, create: bool = False,
               schema: Schema | None = None) -> SeqVault:
    from ..vault import SeqVault

    vault = SeqVault.open(path, schema=schema, read_only=read_only, create=create)
    for p in vault.log_damage:  # read-only opens serve what is intact and say what is not
        click.echo(f"Warning: {p['error']} ({p['path']}); serving the intact data; "
                   f"`seqvault repair --store {path}` salvages the log", err=True)
    return vault


def parse_user(schema: Schema, text: str) -> int | str:
    """A user id from the command line, typed by the store's schema."""
    if schema.user_type == "string":
        return text
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an integer; this store's user column "
                                 f"{schema.user_column!r} is int64", param_hint="USER") from None


def parse_columns(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [c.strip() for c in text.split(",") if c.strip()]


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[str, int, int | None], None]]:
    """A rich progress bar on stderr with one task per phase; a no-op when disabled.

    Yields `update(phase, done, total)`.
    """
    if not enabled:
        yield lambda phase, done, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    labels = {"fingerprint": "fingerprint (bytes)", "read": "read + partition",
              "write": "sort + write", "verify": "verify",
              "export": "export (users)", "merge": "merge (users)",
              "reclaim": "reclaim (users)"}
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  transient=False) as prog:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int | None) -> None:
            task = tasks.get(phase)
            if task is None:
                task = tasks[phase] = prog.add_task(labels.get(phase, phase), total=total)
            prog.update(task, completed=done, total=total)

        yield update


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def store_in_use(store: Path) -> list[int] | None:
    """Processes that have the store open: their pids (Linux, from /proc), or [] when some
    process holds it but its pid is unknown; None when nobody has it open.

    Every process with the store open (a writer, a read-only server) holds a shared lock on
    LMDB's lock file for as long as it has the store open, so taking that lock exclusively
    succeeds only when nobody else does. Call it only from a process that does not have the
    store open itself: POSIX record locks belong to the process, and closing our descriptor
    of lock.mdb would drop this process's own LMDB lock."""
    import fcntl

    lock = store / "meta" / "lock.mdb"
    if not lock.exists():
        return None
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        return None
    except OSError:
        pass
    finally:
        os.close(fd)  # also drops the lock if we got it
    return _pids_with_open_files(store)


def _pids_with_open_files(root: Path) -> list[int]:
    prefix = str(root.resolve()) + os.sep
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        if int(proc.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd).startswith(prefix) for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:  # gone, or not ours to look at
            continue
    return sorted(pids)
