"""The store path: load a model data set into a SeqVault store, read histories via laser_reader.

`StoreHistory.build(dataset, path)` writes the event log (user → item_id, cat, aux, ts in ms)
into a fresh store with one `BulkWriter` transaction, and `gather(users, before, L)` reads each
impression's history back with `LaserReader.read_batch(users, before=ts)` — events strictly
before the impression's own timestamp, so the log's later events (the synthetic benchmark plants
each click there as bait) can never leak into training. The arrays it returns are the ones
`data.ArrayHistory` computes in numpy; tests check that the two agree exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset, Histories

STORE_SCHEMA: dict[str, Any] = {
    "user": {"column": "user_id", "type": "int64"},
    "time": {"column": "ts", "unit": "ms"},
    "columns": [
        {"name": "item_id", "type": "int64", "default": 0},
        {"name": "cat", "type": "int32", "default": 0},
        {"name": "aux", "type": "int16", "default": 0},
    ],
}
MARKER = "model-dataset.json"


def store_available() -> str | None:
    """None when the engine and laser_reader can be imported, else the reason they cannot."""
    try:
        from seqvault import Schema, SeqVault  # noqa: F401
        from seqvault.laser_reader import LaserReader  # noqa: F401
    except ImportError as exc:
        return f"the store path needs seqvault's engine and laser_reader: {exc}"
    return None


def _fingerprint(ds: Dataset) -> dict[str, Any]:
    ev = ds.events
    return {"name": ds.name, "events": int(len(ev)), "users": int(len(np.unique(ev.user))),
            "ts_sum": int(ev.ts.sum() % (1 << 61)), "item_sum": int(ev.item.sum() % (1 << 61))}


class StoreHistory:
    """Point-in-time histories read from a SeqVault store through `LaserReader`."""

    def __init__(self, vault: Any) -> None:
        self.vault = vault
        self._readers: dict[int, Any] = {}

    @classmethod
    def build(cls, ds: Dataset, path: Path | str, log: Callable[[str], None] | None = None
              ) -> StoreHistory:
        from seqvault import Schema, SeqVault

        path = Path(path)
        fp = _fingerprint(ds)
        marker = path / MARKER
        if path.exists() and any(path.iterdir()):
            if marker.exists() and json.loads(marker.read_text()) == fp:
                return cls(SeqVault.open(path, read_only=True))
            raise ValueError(f"store dir {path}: not empty and not a store of this data set; "
                             "remove it or pick another --store-dir")
        vault = SeqVault.open(path, schema=Schema.from_dict(STORE_SCHEMA), durability="none")
        ev = ds.events
        order = np.lexsort((ev.ts, ev.user))
        user, ts = ev.user[order], ev.ts[order].astype(np.int64)
        cols: dict[str, np.ndarray] = {
            "item_id": ev.item[order].astype(np.int64),
            "cat": ev.cat[order].astype(np.int32),
            "aux": ev.aux[order].astype(np.int16),
        }
        users, starts = np.unique(user, return_index=True)
        bounds = np.append(starts, len(user))
        bw = vault.bulk_writer(merge_existing=False)
        try:
            for i, u in enumerate(users.tolist()):
                s, e = int(bounds[i]), int(bounds[i + 1])
                bw.add(u, ts[s:e], {k: v[s:e] for k, v in cols.items()})
            bw.commit()
        except BaseException:
            bw.abort()
            raise
        vault.close()
        marker.write_text(json.dumps(fp))
        if log is not None:
            log(f"store: wrote {len(ev):,} events of {len(users):,} users into {path}")
        return cls(SeqVault.open(path, read_only=True))

    def reader(self, max_len: int) -> Any:
        if max_len not in self._readers:
            from seqvault.laser_reader import LaserReader

            self._readers[max_len] = LaserReader(self.vault, columns=["item_id", "cat", "aux"],
                                                 max_len=max_len, padding_side="left",
                                                 time_features=False)
        return self._readers[max_len]

    def gather(self, user: np.ndarray, before: np.ndarray, max_len: int) -> Histories:
        b = self.reader(max_len).read_batch([int(u) for u in user],
                                            before=np.asarray(before, dtype=np.int64))
        mask = np.asarray(b.mask, dtype=bool)
        return Histories(
            item=np.asarray(b["item_id"], dtype=np.int64),
            cat=np.asarray(b["cat"], dtype=np.int64),
            aux=np.asarray(b["aux"], dtype=np.int64),
            mask=mask,
        )

    def close(self) -> None:
        self.vault.close()


def check_against_arrays(ds: Dataset, path: Path | str, max_len: int,
                         log: Callable[[str], None] = print) -> dict[str, float]:
    """Load `ds` into a store at `path`, read every request's history back through
    `laser_reader` and compare with the numpy `ArrayHistory`; returns timings and counts.
    Raises AssertionError at the first difference."""
    import time

    from .data import ArrayHistory

    t0 = time.perf_counter()
    store = StoreHistory.build(ds, path, log=log)
    built = time.perf_counter() - t0
    imps = ds.impressions
    pairs = np.unique(np.stack([imps.user, imps.ts], axis=1), axis=0)
    arrays = ArrayHistory(ds.events)
    read = 0.0
    events = 0
    for s in range(0, len(pairs), 1024):
        u, b = pairs[s:s + 1024, 0], pairs[s:s + 1024, 1]
        t1 = time.perf_counter()
        h = store.gather(u, b, max_len)
        read += time.perf_counter() - t1
        a = arrays.gather(u, b, max_len)
        for f in ("item", "cat", "aux", "mask"):
            if not np.array_equal(getattr(h, f), getattr(a, f)):
                raise AssertionError(f"store and arrays differ in {f} for users {u[:3]}...")
        events += int(h.mask.sum())
    store.close()
    out = {"events_written": float(len(ds.events)), "build_s": built,
           "requests": float(len(pairs)), "events_read": float(events), "read_s": read}
    log(f"store check: wrote {len(ds.events):,} events in {built:.1f}s; read {len(pairs):,} "
        f"point-in-time histories ({events:,} events, L={max_len}) through laser_reader in "
        f"{read:.1f}s; identical to the numpy path")
    return out


if __name__ == "__main__":
    import sys

    from .data_synthetic import SyntheticConfig, generate

    # python -m seqvault.model.store_adapter STORE_DIR [quick]
    quick = len(sys.argv) > 2 and sys.argv[2] == "quick"
    cfg = SyntheticConfig.quick() if quick else SyntheticConfig()
    check_against_arrays(generate(cfg), sys.argv[1], cfg.window)
