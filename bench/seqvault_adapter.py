"""SeqVault behind the benchmark's store interface, through its public API only.

The interface every benchmarked store offers (see also ``rocks_baselines``):

- ``load(histories) -> events``   bulk load of (user, columns) pairs
- ``append_events(columns)``      one acknowledged append call: a batch of interleaved events
- ``read_last(user, n)``          the newest ``n`` events as numpy columns, ascending time
- ``quiesce()``                   reach the steady state reads are measured in
- ``maintenance()``               a callable doing background merge work, or None
- ``disk_bytes()``, ``stats()``, ``close()``

Features that later issues add (bulk ``ingest``, lifetime ``merge``) are detected, not assumed:
while missing, the workloads that need them are skipped with a note in the report.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from bench.rocks_baselines import dir_bytes
from bench.workload import ARROW_SCHEMA, EVENT_COLUMNS, USER_COLUMN

# Users are grouped into append_batch calls of about this many rows during the bulk load:
# large enough to amortise per-call costs, small enough to keep the loader's memory flat.
LOAD_CHUNK_ROWS = 250_000
BULK_FILE = "bulk-load.parquet"


def available() -> str | None:
    """None when the engine is importable, else why not (shown in the report)."""
    try:
        from seqvault import Schema, SeqVault  # noqa: F401
    except Exception as exc:  # any import failure means "not benchmarkable yet"
        return f"seqvault not importable: {exc!r}"
    return None


def _ingest_function():
    """``seqvault.ingest.ingest(vault, paths)`` when the bulk-ingest issue has landed."""
    try:
        from seqvault.ingest import ingest
    except ImportError:
        return None
    return ingest if callable(ingest) else None


def features() -> dict[str, bool]:
    from seqvault import SeqVault

    return {
        "merge": callable(getattr(SeqVault, "merge", None)),
        "ingest": _ingest_function() is not None,
    }


def write_bulk_file(histories, path: str) -> int:
    """The bulk-load input as a Parquet file. ``run.py`` writes it in the parent process so the
    worker's peak RSS is the ingest's, not the generator's."""
    import pyarrow.parquet as pq

    table = interleaved_table(histories)
    pq.write_table(table, path, row_group_size=1 << 20, compression="zstd")
    return table.num_rows


def interleaved_table(histories) -> pa.Table:
    """All histories as one table, users interleaved as in a real log, each user's events kept
    in arrival order (so equal timestamps must come back in the same order)."""
    rng = np.random.default_rng(11)
    parts, keys = [], []
    for user, cols in histories:
        n = len(cols["ts"])
        parts.append({USER_COLUMN: np.full(n, user, dtype=np.int64), **cols})
        keys.append(np.sort(rng.random(n)))  # monotone within a user: arrival order survives
    order = np.argsort(np.concatenate(keys), kind="stable")
    table = {c: np.concatenate([p[c] for p in parts])[order] for c in (USER_COLUMN,) + EVENT_COLUMNS}
    return pa.table(table, schema=ARROW_SCHEMA)


class SeqVaultStore:
    name = "seqvault"

    def __init__(self, path: str, durability: str, cap: int = 10_000) -> None:
        from seqvault import Schema, SeqVault

        self.path = path
        self.durability = durability
        schema = Schema.from_arrow(ARROW_SCHEMA, user_column=USER_COLUMN, time_column="ts")
        self.vault = SeqVault.open(path, schema=schema, durability=durability)
        self.features = features()
        self.stored_events = 0
        self.load_method = "append_batch"

    def prepare_bulk(self, histories, scratch: str):
        """With bulk ingest available: return (the timed load callable, events) over the
        Parquet log ``run.py`` wrote beforehand (written here if missing). Otherwise None, and
        ``load`` appends in batches."""
        ingest = _ingest_function()
        if ingest is None:
            return None
        import pyarrow.parquet as pq

        path = os.path.join(scratch, BULK_FILE)
        if not os.path.exists(path):
            write_bulk_file(histories, path)
        rows = pq.ParquetFile(path).metadata.num_rows
        self.load_method = "ingest (Parquet, users interleaved)"
        self.stored_events += rows

        def run() -> int:
            summary = ingest(self.vault, [path])
            return int(getattr(summary, "events", rows))

        return run, rows

    def load(self, histories) -> int:
        """Bulk load through ``append_batch`` in large multi-user calls (no ingest needed)."""
        n = 0
        parts: list[tuple[int, dict]] = []
        pending = 0
        for user, cols in histories:
            parts.append((user, cols))
            pending += len(cols["ts"])
            if pending >= LOAD_CHUNK_ROWS:
                n += self._append_users(parts)
                parts, pending = [], 0
        if parts:
            n += self._append_users(parts)
        self.stored_events += n
        return n

    def _append_users(self, parts: list[tuple[int, dict]]) -> int:
        users = np.concatenate(
            [np.full(len(cols["ts"]), user, dtype=np.int64) for user, cols in parts]
        )
        table = {USER_COLUMN: users}
        for c in EVENT_COLUMNS:
            table[c] = np.concatenate([cols[c] for _, cols in parts])
        self.vault.append_batch(pa.table(table, schema=ARROW_SCHEMA))
        return len(users)

    def append_events(self, cols: dict) -> None:
        users = cols[USER_COLUMN]
        if len(users) == 1:
            # A single event is the plain per-user append call a feature logger would make.
            self.vault.append(int(users[0]), {c: cols[c] for c in EVENT_COLUMNS})
        else:
            self.vault.append_batch(cols)

    def read_last(self, user: int, n: int) -> dict[str, np.ndarray]:
        return self.vault.read(user, last=n)

    def quiesce(self) -> None:
        self.vault.flush()
        if self.features["merge"]:
            self.vault.merge()

    def flush(self) -> None:
        self.vault.flush()

    def merge(self) -> None:
        # The counterpart of RocksDB's full manual compaction (`compact_range`): a merge that
        # also rewrites files with more than 10% garbage (`idle_reclaim_ratio`, what
        # auto_merge runs when idle). A plain `merge()` stops at 50% garbage (the policy under
        # load), which left 1.52x the bytes of a clean load after the append workloads.
        # The default ratio, not this store's setting: the merge phase reopens the store with
        # idle_reclaim_ratio=0 (so that its background pass does not compact), which made this
        # "compaction" reclaim nothing (34% garbage left, bench/results notes).
        if self.features["merge"]:
            from seqvault.settings import DEFAULTS

            self.vault.merge(reclaim_ratio=DEFAULTS["idle_reclaim_ratio"])

    # Where the merge of the "reads during merge" phase runs (bench/merge_reads.py sets it):
    # "background" is the writer as a server runs it, auto_merge on, the heavy part in the
    # merge process; "explicit" is merge() called in a thread of this process (in-process).
    merge_mode = "background"
    merge_worker = "process"

    def maintenance(self):
        """Seal what the appends left in memory, then merge: the real-time segments the
        append workloads created are what a lifetime merge exists to fold.

        Background mode (the default): the memtable is flushed, then the store reopened with
        ``auto_merge=True``; the real-time segments left by the append workloads are the new
        background merger's backlog, and ``merge_interval=3600`` makes it wait to be woken:
        the returned work wakes it (``wait_merged``) and waits for the pass, so the timed
        window holds the merge alone (no flush). ``idle_reclaim_ratio=0`` keeps an idle
        compaction out of the quiet reads that follow."""
        if not self.features["merge"]:
            return None
        if self.merge_mode == "explicit":
            # Flushed before the timed window, as the background mode's reopen does: the quiet
            # reads then see the same data as the reads during the merge (memtable tails read
            # differently from the segments a flush makes).
            self.vault.flush()

            def work():
                return self.vault.merge(worker=self.merge_worker)

            return work
        from seqvault import SeqVault

        self.vault.close()
        self.vault = SeqVault.open(self.path, auto_merge=True, idle_reclaim_ratio=0.0,
                                   merge_interval=3600.0, merge_worker=self.merge_worker)

        def work():
            v = self.vault
            before = v.stats()
            if not v.wait_merged(timeout=3600):
                raise RuntimeError(f"background merge did not finish: {v.stats()}")
            after = v.stats()
            return {"mode": f"background ({self.merge_worker})",
                    "events_in": after["merged_events"] - before["merged_events"],
                    "users_merged": after["merged_users"] - before["merged_users"],
                    "merge_passes": after["merge_passes"] - before["merge_passes"]}

        return work

    def disk_bytes(self) -> int:
        return dir_bytes(self.path)

    def stats(self) -> dict:
        raw = self.vault.stats()
        flat = _flatten(raw)
        out: dict = {"raw": {k: v for k, v in flat.items() if isinstance(v, int | float | str)}}
        out["index_bytes_per_user"] = _index_bytes_per_user(flat)
        return out

    def close(self) -> None:
        self.vault.close()


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _index_bytes_per_user(flat: dict) -> float | None:
    """DRAM index bytes per user from whatever stats() names them; None when absent."""
    for key, value in flat.items():
        if "index" in key and "per_user" in key and isinstance(value, int | float):
            return float(value)
    index_bytes = next(
        (v for k, v in flat.items() if "index" in k and "bytes" in k and isinstance(v, int)),
        None,
    )
    users = next(
        (v for k, v in flat.items() if k.split(".")[-1] in ("users", "n_users") and v), None
    )
    if index_bytes is None or not users:
        return None
    return index_bytes / users
