"""Data sets for the model: an event log, an impressions table, and point-in-time histories.

A `Dataset` is what every loader (synthetic, MovieLens) produces: the behaviour log (what goes
into a SeqVault store) and the impressions to score (user, candidate, timestamp, label, and for
synthetic data the true click probability). A *history source* turns impressions into padded
histories as of each impression's own timestamp (events strictly before it): `ArrayHistory` does
it in numpy straight from the log, `store_adapter.StoreHistory` reads it back through the store
and `laser_reader`. Both return the same arrays, so a model cannot tell which one fed it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class EventLog:
    """The behaviour log, one row an event. Columns: user, item, cat, aux, ts (int64)."""

    user: np.ndarray
    item: np.ndarray
    cat: np.ndarray
    aux: np.ndarray
    ts: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("item", "cat", "aux", "ts"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"EventLog.{name}: got {len(getattr(self, name))} rows, expected {n}"
                )

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class Impressions:
    """One row a (user, candidate, time) with its label; `split` 0 train, 1 val, 2 test."""

    user: np.ndarray
    item: np.ndarray
    cat: np.ndarray
    ts: np.ndarray
    label: np.ndarray
    split: np.ndarray
    prob: np.ndarray | None = None  # the true click probability (synthetic data only)
    # the true sequence feature behind `prob` (synthetic only: the capped count that drives the
    # truth); only the "perfect features" probe `oracle` reads it, to split the gap to the
    # ceiling into "the sequence module did not find the count" and everything else
    hint: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS[split])


@dataclass
class Dataset:
    name: str
    events: EventLog
    impressions: Impressions
    n_items: int
    n_cats: int
    n_aux: int
    info: dict[str, object] = field(default_factory=dict)


@dataclass
class Histories:
    """Padded histories, left padding (newest event last), mask True = real event."""

    item: np.ndarray  # [B, L] int64
    cat: np.ndarray
    aux: np.ndarray
    mask: np.ndarray  # [B, L] bool


class HistorySource(Protocol):
    def gather(self, user: np.ndarray, before: np.ndarray, max_len: int) -> Histories: ...


class ArrayHistory:
    """Point-in-time histories straight from an `EventLog`, vectorised (no per-row loop)."""

    def __init__(self, events: EventLog) -> None:
        order = np.lexsort((events.ts, events.user))  # by user, then time (stable)
        self.user = events.user[order]
        self.item = events.item[order].astype(np.int64)
        self.cat = events.cat[order].astype(np.int64)
        self.aux = events.aux[order].astype(np.int64)
        ts = events.ts[order].astype(np.int64)
        self.users, starts = np.unique(self.user, return_index=True)
        self.starts = np.append(starts, len(self.user)).astype(np.int64)
        self.tmin = int(ts.min()) if len(ts) else 0
        self.span = (int(ts.max()) - self.tmin + 2) if len(ts) else 2
        if len(self.users) * self.span >= 2**62:
            raise ValueError("ArrayHistory: users × time span too large for a combined int64 key")
        rank = np.repeat(np.arange(len(self.users), dtype=np.int64), np.diff(self.starts))
        # one sorted int64 key (user rank, time): a single searchsorted finds every cut point
        self.key = rank * self.span + (ts - self.tmin)

    def gather(self, user: np.ndarray, before: np.ndarray, max_len: int) -> Histories:
        user = np.asarray(user)
        before = np.asarray(before, dtype=np.int64)
        ui = np.searchsorted(self.users, user)
        ui_c = np.minimum(ui, max(len(self.users) - 1, 0))
        found = (ui < len(self.users)) & (self.users[ui_c] == user) if len(self.users) else (
            np.zeros(len(user), dtype=bool)
        )
        lo = self.starts[ui_c]
        rel = np.clip(before - self.tmin, 0, self.span - 1)
        end = np.searchsorted(self.key, ui_c * self.span + rel, side="left")  # ts < before
        end = np.where(found, end, lo)
        idx = end[:, None] - max_len + np.arange(max_len)[None, :]
        mask = (idx >= lo[:, None]) & found[:, None]
        idx = np.where(mask, idx, 0)

        def take(col: np.ndarray) -> np.ndarray:
            if len(col) == 0:
                return np.zeros(idx.shape, dtype=np.int64)
            return np.where(mask, col[idx], 0)

        return Histories(take(self.item), take(self.cat), take(self.aux), mask)


class CachedHistory:
    """Histories gathered once for every impression row, then served by row index.

    Used when the source is slow per call (the store path): one pass reads everything. Rows that
    share (user, timestamp) — the candidates of one request — are read once.
    """

    def __init__(self, source: HistorySource, imps: Impressions, max_len: int,
                 batch: int = 1024) -> None:
        pairs = np.stack([imps.user.astype(np.int64), imps.ts.astype(np.int64)], axis=1)
        uniq, self.row_to_pair = np.unique(pairs, axis=0, return_inverse=True)
        self.row_to_pair = self.row_to_pair.ravel()
        n = len(uniq)
        self.item = np.zeros((n, max_len), dtype=np.int64)
        self.cat = np.zeros((n, max_len), dtype=np.int64)
        self.aux = np.zeros((n, max_len), dtype=np.int64)
        self.mask = np.zeros((n, max_len), dtype=bool)
        for s in range(0, n, batch):
            h = source.gather(uniq[s:s + batch, 0], uniq[s:s + batch, 1], max_len)
            self.item[s:s + batch], self.cat[s:s + batch] = h.item, h.cat
            self.aux[s:s + batch], self.mask[s:s + batch] = h.aux, h.mask

    def rows(self, rows: np.ndarray) -> Histories:
        p = self.row_to_pair[rows]
        return Histories(self.item[p], self.cat[p], self.aux[p], self.mask[p])

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """Real events in each row's history (for length bucketing)."""
        if not hasattr(self, "_lengths"):
            self._lengths = self.mask.sum(axis=1)
        return np.asarray(self._lengths[self.row_to_pair[rows]])


def iterate_batches(
    imps: Impressions,
    rows: np.ndarray,
    histories: HistorySource | CachedHistory,
    max_len: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    buckets: int = 0,
) -> Iterator[tuple[np.ndarray, Histories]]:
    """Yield (row indices, histories) batches over `rows` of the impressions.

    `buckets` > 0 (only with a `CachedHistory`): after shuffling, every run of `buckets` batches
    is sorted by history length, cut into batches, and the batches shuffled. Each batch then
    holds histories of similar length, so trimming the padding saves most of the work on
    log-uniform lengths (quadratic models at L = 4,000 would otherwise pay for the longest
    history of every batch), while every row is still seen once per epoch in a random batch.
    """
    rng = np.random.default_rng(seed)
    if shuffle:
        rows = rng.permutation(rows)
    if buckets > 0 and isinstance(histories, CachedHistory):
        chunk = buckets * batch_size
        batches = []
        for c in range(0, len(rows), chunk):
            part = rows[c:c + chunk]
            part = part[np.argsort(histories.lengths(part), kind="stable")]
            batches += [part[s:s + batch_size] for s in range(0, len(part), batch_size)]
        if shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for r in batches:
            yield r, histories.rows(r)
        return
    for s in range(0, len(rows), batch_size):
        r = rows[s:s + batch_size]
        if isinstance(histories, CachedHistory):
            yield r, histories.rows(r)
        else:
            yield r, histories.gather(imps.user[r], imps.ts[r], max_len)


def trim_padding(h: Histories, multiple: int = 1) -> Histories:
    """Drop leading columns that are padding in every row (keeps T a multiple of `multiple`)."""
    real = h.mask.any(axis=0)
    if not real.any():
        keep = multiple
    else:
        first = int(np.argmax(real))
        keep = h.mask.shape[1] - first
        keep = -(-keep // multiple) * multiple
    keep = min(keep, h.mask.shape[1])
    return Histories(h.item[:, -keep:], h.cat[:, -keep:], h.aux[:, -keep:], h.mask[:, -keep:])
