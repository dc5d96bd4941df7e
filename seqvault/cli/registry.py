"""Which modules add commands to the root `seqvault` group.

Each entry is `(module, attribute)`: the attribute is either a click command/group (added as
is) or a `register(cli)` function. Modules listed here must import only click at module level
(heavy imports such as pyarrow, rich, fastapi or torch go inside the command functions), so
`seqvault --help` stays fast.

To add a command (serve, bench, model, ...): write it in your own module and append a line to
`COMMAND_MODULES`. An entry whose module does not exist yet is skipped (so a command can be
listed before it lands); any other import error is raised.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

COMMAND_MODULES: tuple[tuple[str, str], ...] = (
    ("seqvault.cli.store_cmds", "register"),  # init get append delete merge stats info ledger schema
    ("seqvault.cli.data_cmds", "register"),  # ingest export verify
    ("seqvault.cli.serve", "serve"),  # serve
    ("seqvault.model.cli", "model_cli"),  # model (LASER reference model)
    ("seqvault.bench_cli", "register"),  # bench (issue 6)
    ("seqvault.cli.cluster_cmds", "cluster_group"),  # cluster (issue 15)
    ("seqvault.cli.repair_cmd", "repair_cmd"),  # repair (issue 14: a damaged log)
)


def register_all(cli: click.Group) -> None:
    for module_name, attr in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # not written yet
                continue
            raise
        target: Any = getattr(module, attr)
        if isinstance(target, click.Command):
            cli.add_command(target)
        else:
            target(cli)
