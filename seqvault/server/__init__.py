"""The HTTP service (FastAPI + uvicorn): `create_app(store_path, read_only=True, token=None)`.

Needs the `server` extra: ``pip install 'seqvault[server]'``. See docs/design/http.md.
`create_app` is imported lazily so that `seqvault.cli.serve` (the `serve` command, loaded by
`seqvault --help`) does not import FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'seqvault.server' has no attribute {name!r}")
