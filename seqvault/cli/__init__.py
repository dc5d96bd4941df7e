"""The `seqvault` command line (click). Commands mirror the Python API; see cli/ for the
generated reference."""

from __future__ import annotations

from .main import cli, main

__all__ = ["cli", "main"]
