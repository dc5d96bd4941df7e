"""SeqVault: a schema-aware key-value storage engine for user behaviour sequences.

    from seqvault import SeqVault, Schema
    vault = SeqVault.open("store", schema=Schema.load("schema/behavior.toml"))
    vault.append(42, {"ts": [...], "item_id": [...], ...})
    seq = vault.read(42, last=10_000)   # columns as numpy arrays, ascending ts
"""

from .errors import (
    CorruptionError,
    DuplicateIngest,
    FormatVersionError,
    MergeFailed,
    NotFound,
    ReadOnlyError,
    SchemaError,
    SeqVaultError,
    StoreClosed,
    StoreLocked,
    ValidationError,
    WriterFailed,
)
from .native import native_available
from .schema import Column, Retention, Schema
from .vault import SeqVault, UserSequence

__version__ = "0.1.0"

__all__ = [
    "Column",
    "CorruptionError",
    "DuplicateIngest",
    "FormatVersionError",
    "MergeFailed",
    "NotFound",
    "ReadOnlyError",
    "Retention",
    "Schema",
    "SchemaError",
    "SeqVault",
    "SeqVaultError",
    "StoreClosed",
    "StoreLocked",
    "UserSequence",
    "ValidationError",
    "WriterFailed",
    "__version__",
    "native_available",
]
