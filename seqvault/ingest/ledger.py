"""The ingest ledger: one LMDB record per ingested input file, keyed by content fingerprint.

Entries are written in the same LMDB transaction that publishes the ingested data (see
docs/format/ledger.md), so "the file is in the ledger" and "the file's events are readable"
are the same fact: a crash can never leave one without the other.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..vault import SeqVault

LEDGER_DB = "ledger"
ENTRY_VERSION = 1


def ledger_key(fingerprint: str, alg: str = "blake2b-256") -> bytes:
    """`<alg>:<hex digest>` in ASCII, e.g. b"blake2b-256:9f86d0...". Sorting groups by alg."""
    return f"{alg}:{fingerprint}".encode("ascii")


def make_entry(*, path: str, size: int, rows: int, kind: str, fingerprint: str,
               alg: str, commit_seq: int, previous: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "v": ENTRY_VERSION,
        "fingerprint": fingerprint,
        "alg": alg,
        "path": path,
        "size": size,
        "rows": rows,
        "kind": kind,
        "ingested_ns": time.time_ns(),
        "commit_seq": commit_seq,
        "times": 1,
    }
    if previous is not None:  # --force: keep the history short but honest
        entry["times"] = int(previous.get("times", 1)) + 1
        entry["first_ingested_ns"] = previous.get("first_ingested_ns",
                                                  previous.get("ingested_ns"))
    return entry


def lookup(vault: SeqVault, key: bytes) -> dict[str, Any] | None:
    return vault.manifest.ledger_get(key)


def entries(vault: SeqVault) -> list[dict[str, Any]]:
    """Every ledger entry, oldest ingest first."""
    return sorted(vault.manifest.ledger_entries(), key=lambda e: e.get("ingested_ns", 0))
