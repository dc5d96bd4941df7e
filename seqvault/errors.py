"""The SeqVault exception hierarchy.

Every error the engine raises on purpose is a `SeqVaultError`. Messages name the field, the value
and what was expected, so a user can fix the input without reading the source. The command line
maps each class to a documented exit code (see `EXIT_CODES`).
"""

from __future__ import annotations

from typing import Any


class SeqVaultError(Exception):
    """Base class of every error SeqVault raises on purpose."""

    exit_code = 1


class SchemaError(SeqVaultError):
    """A schema is invalid, or a change to it is not allowed (remove, retype, rename)."""

    exit_code = 3


class ValidationError(SeqVaultError):
    """Input does not fit the schema. Nothing from the call was written.

    `column`, `row` and `value` say where; `row` is the 0-based row within the call.
    """

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        column: str | None = None,
        row: int | None = None,
        value: Any = None,
    ) -> None:
        super().__init__(message)
        self.column = column
        self.row = row
        self.value = value


class SettingsError(ValidationError, ValueError):
    """A store setting is unknown or out of its allowed range. Nothing was created or changed.

    Also a ValueError, which is what a bad setting raised before it had its own class."""

    def __init__(self, message: str, *, setting: str | None = None, value: Any = None) -> None:
        super().__init__(message, column=setting, value=value)
        self.setting = setting


class StoreLocked(SeqVaultError):
    """Another process holds the store's writer lock."""

    exit_code = 4

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class CorruptionError(SeqVaultError):
    """A checksum, length or structural check failed. The data was not served."""

    exit_code = 5

    def __init__(self, message: str, *, path: str | None = None, user: Any = None) -> None:
        super().__init__(message)
        self.path = path
        self.user = user


class FormatVersionError(SeqVaultError):
    """The store or file was written by a newer (or unknown) format version."""

    exit_code = 6


class NotFound(SeqVaultError):
    """A store, file or named object does not exist."""

    exit_code = 7


class ReadOnlyError(SeqVaultError):
    """A write was attempted on a store opened with read_only=True."""

    exit_code = 8


class WriterFailed(SeqVaultError):
    """A write or fsync of the store failed (EIO, ENOSPC, ...). The writer acknowledges nothing
    more: after a failed fsync the kernel may have dropped the dirty pages and cleared the
    error, so a retry could report success for data that is gone (PostgreSQL's "fsyncgate").
    Reads still work; reopen the store to continue from what is durable."""


class StoreClosed(SeqVaultError):
    """The store was used after close()."""


class MergeFailed(SeqVaultError):
    """The merge process died or failed in a way that is not one of the errors above (the
    batch it worked on is not published; the store is unchanged). The background merger
    retries with a new process after a back-off; an explicit merge() raises it."""


class DuplicateIngest(SeqVaultError):
    """The same input file (by content fingerprint) was ingested before."""

    exit_code = 9


EXIT_CODES = {
    "ok": 0,
    "error": 1,
    "usage": 2,
    "schema or validation error": SchemaError.exit_code,
    "store locked": StoreLocked.exit_code,
    "corruption found": CorruptionError.exit_code,
    "format version not supported": FormatVersionError.exit_code,
    "not found": NotFound.exit_code,
    "read-only store": ReadOnlyError.exit_code,
    "duplicate ingest": DuplicateIngest.exit_code,
}
