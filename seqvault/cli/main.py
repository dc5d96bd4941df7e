"""Root command group and the commands of the core engine.

Other commands (ingest, merge, serve, bench, model) register themselves in `commands()` below;
heavy imports happen inside the command that needs them.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import SeqVaultError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="seqvault")
def cli() -> None:
    """SeqVault: a storage engine for user behaviour sequences (last-N reads in milliseconds).

    Exit codes: 0 ok, 1 error, 2 usage, 3 schema/validation error, 4 store locked,
    5 corruption found, 6 format version not supported, 7 not found, 8 read-only store,
    9 duplicate ingest.
    """


def main() -> None:
    try:
        # Without standalone mode, click *returns* the code of ctx.exit(code) (e.g. verify's 5).
        rc = cli.main(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SeqVaultError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `seqvault get u1 --nl | head` must exit quietly.
        sys.stderr.close()
        sys.exit(0)
    except OSError as exc:
        # Disk full, permission denied, read-only filesystem: one line naming the path, not a
        # traceback (docs/design/safety.md, "Filesystem faults").
        from .common import describe_os_error

        message, code = describe_os_error(exc)
        click.echo(f"Error: {message}", err=True)
        sys.exit(code)
    except Exception as exc:
        # LMDB reports a failed metadata write (a full disk, an I/O error) as lmdb.Error; the
        # transaction was aborted, so the last committed state is what the store holds.
        if type(exc).__module__ != "lmdb":
            raise
        from .common import current_store

        click.echo(f"Error: metadata write failed in {current_store() or 'the store'} ({exc}); "
                   "check free disk space; the last committed state is intact", err=True)
        sys.exit(1)


# Commands of the other issues (ingest, get, serve, bench, model, ...) are listed in
# registry.py; their modules import only click at module level.
from .registry import register_all  # noqa: E402

register_all(cli)
