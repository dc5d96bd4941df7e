"""Bulk ingest of behaviour logs (Parquet, CSV, JSON lines): `ingest(vault, paths)`.

Modules: `sources` (input files, fingerprints, batches), `spill` (partition by user hash),
`ledger` (what was ingested, keyed by content fingerprint), `core` (the two passes + commit).
"""

from .core import IngestSummary, ingest, peak_rss_bytes
from .ledger import entries as ledger_entries
from .sources import expand_paths, fingerprint

__all__ = ["IngestSummary", "expand_paths", "fingerprint", "ingest", "ledger_entries",
           "peak_rss_bytes"]
