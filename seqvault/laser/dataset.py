"""`ImpressionDataset`: a PyTorch IterableDataset of ready training batches, leakage-free.

Each impression row (user, target item and its side columns, timestamp, label) gets the user's
history as of its own timestamp: only events strictly before it (`read_batch(before=ts)`), so a
model never sees the click it is asked to predict, nor anything after.

Sharding: the (optionally shuffled) row order is cut into `world_size × num_workers` strided
shards, shard `rank × num_workers + worker_id`; every row lands in exactly one shard. The order
depends only on (seed, epoch): the same seed gives the same batches. Each worker opens the store
itself, read-only, from a path or a factory: an open SeqVault cannot cross process boundaries.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ValidationError
from ..vault import SeqVault
from .batch import LaserBatch, convert_tensors
from .features import StringMap
from .reader import LaserReader


@dataclass
class ImpressionBatch:
    """One training batch: `history` (a LaserBatch, [B, T] per history column), `target`
    (column → [B]), `label` [B] float32, `ts` [B] impression time, `user_id` [B] and `row` [B]
    (the impression's row number in the table, for joins and coverage checks)."""

    history: LaserBatch
    target: dict[str, Any]
    label: Any
    ts: Any
    user_id: Any
    row: Any

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def to_torch(self, device: Any = None, pin_memory: bool = False) -> ImpressionBatch:
        out = convert_tensors(self, device, pin_memory)
        out.history = self.history.to_torch(device, pin_memory)
        return out

    def pin_memory(self) -> ImpressionBatch:
        """Called by DataLoader(pin_memory=True)."""
        return self.to_torch(pin_memory=True)


def _load_table(impressions: Any, columns: list[str]) -> Any:
    import pyarrow as pa

    if isinstance(impressions, str | os.PathLike):
        import pyarrow.parquet as pq

        return pq.read_table(impressions, columns=columns)
    if isinstance(impressions, pa.Table):
        return impressions.select(columns)
    if isinstance(impressions, Mapping):
        return pa.table({c: impressions[c] for c in columns})
    raise ValidationError(f"impressions: expected a Parquet path, a pyarrow Table or a mapping of "
                          f"columns, got {type(impressions).__name__}", column="impressions")


def _table_columns(impressions: Any) -> list[str]:
    import pyarrow as pa

    if isinstance(impressions, str | os.PathLike):
        import pyarrow.parquet as pq

        return list(pq.read_schema(impressions).names)
    if isinstance(impressions, pa.Table):
        return list(impressions.column_names)
    if isinstance(impressions, Mapping):
        return list(impressions)
    raise ValidationError(f"impressions: expected a Parquet path, a pyarrow Table or a mapping of "
                          f"columns, got {type(impressions).__name__}", column="impressions")


class ImpressionDataset(IterableDataset):  # type: ignore[type-arg]
    """Training batches over an impressions table, each row's history strictly before its time.

    - `store`: the store's path (each process opens it with read_only=True) or a zero-argument
      factory returning an open SeqVault (called once per iteration in each worker; the
      dataset closes it when the iteration ends).
    - `impressions`: Parquet path, pyarrow Table, or mapping of column arrays.
    - `history_columns`: store columns for the history; `target_columns`: impression-table
      columns passed through per row (string ones mapped with `string_maps`); `label_column`.
    - `user_column` / `time_column`: impression-table columns; default to the store's names.
      Times are integers in the store's time unit (Arrow timestamps are converted).
    - `max_len`, `padding_side`, `pad_value`, `pad_to`, `string_maps`, `oov_id`, `time_features`:
      as `LaserReader` (event ages are measured from each impression's time).
    - `batch_size`, `shuffle`, `seed`, `drop_last`; `set_epoch(e)` reshuffles deterministically.
    - `rank` / `world_size`: explicit, else from torch.distributed when initialised, else 0 / 1.
    - `output`: "torch" (tensors) or "numpy".

    Use with `DataLoader(ds, batch_size=None, num_workers=k)`: the dataset batches itself.
    """

    def __init__(self, store: str | os.PathLike[str] | Callable[[], Any], impressions: Any,
                 history_columns: Sequence[str], target_columns: Sequence[str] = (),
                 label_column: str = "label", max_len: int = 1000, batch_size: int = 256,
                 seed: int = 0, *, shuffle: bool = True, drop_last: bool = False,
                 user_column: str | None = None, time_column: str | None = None,
                 padding_side: str = "left", pad_value: Any = 0, pad_to: str = "max_len",
                 string_maps: Mapping[str, Any] | None = None, oov_id: int | None = None,
                 time_features: Any = True, rank: int | None = None,
                 world_size: int | None = None, output: str = "torch") -> None:
        super().__init__()

        if isinstance(store, SeqVault):
            raise ValidationError(
                "store: pass the store's path (or a factory returning a SeqVault), not an open "
                "SeqVault: DataLoader workers are separate processes and each opens the store "
                "itself with read_only=True", column="store")
        if not (isinstance(store, str | os.PathLike) or callable(store)):
            raise ValidationError(f"store: expected a path or a factory, got "
                                  f"{type(store).__name__}", column="store")
        self.store = store
        for name, v in (("batch_size", batch_size), ("max_len", max_len)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v <= 0:
                raise ValidationError(f"{name}: {v!r} must be a positive integer", column=name,
                                      value=v)
        if output not in ("torch", "numpy"):
            raise ValidationError(f"output: {output!r} must be 'torch' or 'numpy'",
                                  column="output", value=output)
        if (rank is None) != (world_size is None):
            raise ValidationError("rank and world_size go together: give both or neither",
                                  column="rank")
        if world_size is not None and (world_size <= 0 or not 0 <= rank < world_size):  # type: ignore[operator]
            raise ValidationError(f"rank {rank!r} / world_size {world_size!r}: need 0 <= rank < "
                                  "world_size", column="rank", value=rank)
        self.impressions = impressions
        self.history_columns = list(history_columns)
        self.target_columns = list(target_columns)
        self.label_column = label_column
        self.user_column = user_column
        self.time_column = time_column
        self.max_len = int(max_len)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.reader_kwargs = dict(max_len=self.max_len, padding_side=padding_side,
                                  pad_value=pad_value, pad_to=pad_to, string_maps=string_maps,
                                  oov_id=oov_id, time_features=time_features)
        self.string_maps = dict(string_maps or {})
        self.oov_id = oov_id
        self.rank, self.world_size = rank, world_size
        self.output = output
        self.epoch = 0
        have = _table_columns(impressions)
        need = [c for c in (user_column, time_column, label_column, *self.target_columns) if c]
        missing = [c for c in need if c not in have]
        if missing:
            raise ValidationError(f"impressions: missing column(s) {missing}; the table has "
                                  f"{have}", column=missing[0])
        self._have = have
        stray = [c for c in self.string_maps
                 if c not in self.history_columns and c not in self.target_columns]
        if stray:
            raise ValidationError(f"string_maps: column(s) {stray} are neither history nor "
                                  "target columns", column=stray[0])

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for a new epoch (same seed and epoch → same order)."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ shards
    def shard(self) -> tuple[int, int]:
        """(this process's shard index, number of shards) over ranks × DataLoader workers."""
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            if dist.is_available() and dist.is_initialized():
                rank, world = dist.get_rank(), dist.get_world_size()
            else:
                rank, world = 0, 1
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        return rank * nw + wid, world * nw

    def order(self, n_rows: int) -> np.ndarray:
        """All rows in this epoch's order (before sharding)."""
        if not self.shuffle:
            return np.arange(n_rows, dtype=np.int64)
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.permutation(n_rows).astype(np.int64)

    def shard_rows(self, n_rows: int) -> np.ndarray:
        index, count = self.shard()
        return self.order(n_rows)[index::count]

    # ------------------------------------------------------------------ iteration
    def _open(self) -> Any:

        if callable(self.store) and not isinstance(self.store, str | os.PathLike):
            return self.store()
        return SeqVault.open(self.store, read_only=True)

    def _columns(self, schema: Any) -> dict[str, np.ndarray]:
        import pyarrow as pa

        ucol = self.user_column or schema.user_column
        tcol = self.time_column or schema.time_column
        for c in (ucol, tcol):
            if c not in self._have:
                raise ValidationError(f"impressions: missing column {c!r}; the table has "
                                      f"{self._have}", column=c)
        names = list(dict.fromkeys([ucol, tcol, self.label_column, *self.target_columns]))
        table = _load_table(self.impressions, names)
        out: dict[str, np.ndarray] = {}
        for c in names:
            col = table.column(c)
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.timestamp(schema.time_unit)).cast(pa.int64())
            arr = col.to_numpy(zero_copy_only=False)
            out[c] = arr
        ts = out[tcol]
        if ts.dtype.kind not in "iu":
            raise ValidationError(f"impressions: time column {tcol!r} has dtype {ts.dtype}; "
                                  f"expected integer timestamps in {schema.time_unit}",
                                  column=tcol)
        out["__user"] = out[ucol]
        out["__ts"] = ts.astype(np.int64)
        out["__label"] = out[self.label_column].astype(np.float32)
        return out

    def __iter__(self) -> Iterator[ImpressionBatch]:

        vault = self._open()
        try:
            kwargs = dict(self.reader_kwargs)
            kwargs["string_maps"] = {c: m for c, m in self.string_maps.items()
                                     if c in self.history_columns}
            reader = LaserReader(vault, self.history_columns, **kwargs)  # type: ignore[arg-type]
            cols = self._columns(vault.schema)
            tmaps = {c: m if isinstance(m, StringMap) else StringMap(m, self.oov_id, column=c)
                     for c, m in self.string_maps.items()
                     if c in self.target_columns and not isinstance(m, str)}
            for c, m in self.string_maps.items():
                if c in self.target_columns and isinstance(m, str) and m == "store":
                    tmaps[c] = StringMap.from_store(vault, c, self.oov_id)
            rows = self.shard_rows(int(cols["__ts"].shape[0]))
            bs = self.batch_size
            stop = rows.size - (rows.size % bs if self.drop_last else 0)
            for start in range(0, stop, bs):
                ids = rows[start:start + bs]
                users = cols["__user"][ids]
                ts = cols["__ts"][ids]
                hist = reader.read_batch(users.tolist(), before=ts)
                target: dict[str, np.ndarray] = {}
                for c in self.target_columns:
                    v = cols[c][ids]
                    if v.dtype == object:
                        if c not in tmaps:
                            raise ValidationError(
                                f"target column {c!r} holds strings: pass string_maps="
                                f"{{{c!r}: {{...}}}} to map them to integer ids", column=c)
                        v = tmaps[c].encode(v)
                    target[c] = v
                batch = ImpressionBatch(history=hist, target=target, label=cols["__label"][ids],
                                        ts=ts, user_id=hist.user_id, row=ids)
                yield batch.to_torch() if self.output == "torch" else batch
        finally:
            vault.close()

