"""Which segment decoder runs: the compiled one (seqvault/native_decode.c) when it is built and
not switched off, else the pure-Python reference in segment.py. Both give the same answers and
the same errors; the compiled one is several times cheaper per segment
(docs/design/realtime.md, "Compiled decoder").

`SEQVAULT_NATIVE=0` in the environment forces the Python decoder (read once, at import).
Tests switch by setting `DECODER` (tests/conftest.py, fixture `decoder`).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(*, honour_env: bool = True) -> ModuleType | None:
    """The compiled decoder module, or None when it is switched off (`honour_env`) or not
    built. Tests pass honour_env=False to test it whatever the environment says."""
    if honour_env and os.environ.get("SEQVAULT_NATIVE", "1") == "0":
        return None
    try:
        # by name: `from . import native_decode` reads to import-linter as importing the
        # package root (the extension has no .py source), which the layer contract forbids
        return importlib.import_module(f"{__package__}.native_decode")
    except ImportError:  # built without libzstd headers, or a source checkout never built
        return None


DECODER: ModuleType | None = load()


def load_kernel(*, honour_env: bool = True) -> ModuleType | None:
    """The compiled append kernel (seqvault/native_append.c), or None when switched off
    (`SEQVAULT_NATIVE=0`, `honour_env`) or not built. `prepare.KERNEL` is the engine's handle
    on it; this one is the format layer's (`segment_batch`'s byte-plane scatter)."""
    if honour_env and os.environ.get("SEQVAULT_NATIVE", "1") == "0":
        return None
    try:
        return importlib.import_module(f"{__package__}.native_append")
    except ImportError:
        return None


def native_available() -> bool:
    """True when reads decode segments with the compiled decoder."""
    return DECODER is not None
