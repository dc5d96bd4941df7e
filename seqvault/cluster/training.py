"""Training input from a cluster: impressions → point-in-time histories → padded torch batches.

    ray.data.read_parquet(impressions)               the table of (user, ts, target, label)
      .map_batches(attach_histories)                 per batch: group rows by shard, one
                                                     LaserReader.read_batch(users, before=ts)
                                                     per shard, scatter back in row order
      .iter_torch_batches(batch_size=B)              dict of tensors for the training loop

Each history holds the user's events strictly before the impression's own timestamp
(`before=ts`), so no label can leak from the future. String columns (of the history and of the
impression table alike) are mapped through the cluster-global vocabularies (`vocab.py`), never
through a shard's own dictionary codes, which differ from shard to shard; a string missing from
the vocabulary maps to `len(vocab) + 1` (the OOV id) and 0 is padding.

Workers keep the shard stores they opened (read-only) in a per-process cache, so a store is
opened once per Ray worker, not once per batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError
from . import manifest as mf
from .runtime import import_ray
from .shardmap import shards_of
from .vocab import load_vocab

_STORES: dict[str, Any] = {}  # per worker process: store path → read-only SeqVault


def _store(path: str) -> Any:
    from ..vault import SeqVault

    v = _STORES.get(path)
    if v is None:
        v = _STORES[path] = SeqVault.open(path, read_only=True, create=False)
    return v


def _encode(values: np.ndarray, vocab: dict[str, int]) -> np.ndarray:
    oov = len(vocab) + 1
    return np.fromiter((vocab.get(str(v), oov) for v in values.tolist()), dtype=np.int64,
                       count=len(values))


def attach_histories(batch: dict[str, np.ndarray], cluster_dir: str, columns: list[str],
                     max_len: int, user_column: str, time_column: str,
                     vocabs: dict[str, dict[str, int]]) -> dict[str, np.ndarray]:
    """Ray Data map: add `hist_<col>` [B, max_len], `hist_mask` [B, max_len] (True = real
    event, left padded: newest last) and `hist_len` [B] to an impressions batch."""
    from ..laser.features import StringMap
    from ..laser_reader import LaserReader

    m = mf.load(cluster_dir)
    users = batch[user_column]
    ts = np.asarray(batch[time_column], dtype=np.int64)
    n = len(ts)
    if users.dtype.kind in "iu":
        shards = shards_of(users.astype(np.int64), m.shards, m.seed)
    else:
        arr = np.empty(n, dtype=object)
        arr[:] = [str(u) for u in users.tolist()]
        users = arr
        shards = shards_of(arr, m.shards, m.seed)
    out: dict[str, np.ndarray] = {}
    mask = np.zeros((n, max_len), dtype=bool)
    lengths = np.zeros(n, dtype=np.int64)
    for shard in np.unique(shards).tolist():
        rows = np.flatnonzero(shards == shard)
        path = m.entry(int(shard)).primary.path
        if not (Path(path) / "meta").exists():
            continue  # an empty shard: no history for these rows
        vault = _store(path)
        # Per column OOV id len(vocab) + 1 (0 stays padding).
        maps = {c: StringMap(vocabs[c], len(vocabs[c]) + 1, column=c)
                for c in columns if c in vocabs}
        reader = LaserReader(vault, columns, max_len=max_len, string_maps=maps,
                             time_features=False)
        lb = reader.read_batch(users[rows].tolist(), before=ts[rows])
        for c in columns:
            arr_c = np.asarray(lb[c])
            if f"hist_{c}" not in out:
                out[f"hist_{c}"] = np.zeros((n, max_len), dtype=arr_c.dtype)
            out[f"hist_{c}"][rows] = arr_c
        mask[rows] = lb.mask
        lengths[rows] = lb.lengths
    for c in columns:
        out.setdefault(f"hist_{c}", np.zeros((n, max_len), dtype=np.int64))
    result = {k: v for k, v in batch.items()}
    for k, v in list(result.items()):
        if k in vocabs and np.asarray(v).dtype.kind in "OUS":
            result[k] = _encode(np.asarray(v), vocabs[k])
    result.update(out)
    result["hist_mask"] = mask
    result["hist_len"] = lengths
    return result


def history_dataset(cluster_dir: str | os.PathLike[str], impressions: Any, *,
                    columns: list[str], max_len: int = 100, user_column: str | None = None,
                    time_column: str | None = None, batch_size: int = 256,
                    num_cpus: float = 0.5) -> Any:
    """A Ray Dataset of impressions with their point-in-time histories (see module doc).
    `impressions`: Parquet path(s) or an existing Ray Dataset."""
    ray = import_ray()
    from ..schema import Schema

    root = str(Path(cluster_dir).resolve())
    m = mf.load(root)
    schema = Schema.from_dict(m.schema)
    unknown = [c for c in columns if c not in schema.column_names]
    if unknown:
        raise ValidationError(f"columns: unknown column(s) {unknown}; the cluster's schema has "
                              f"{schema.column_names}", column=unknown[0])
    vocabs = {c.name: load_vocab(root, c.name) for c in schema.columns if c.is_string}
    ds = impressions if hasattr(impressions, "map_batches") else ray.data.read_parquet(
        impressions if isinstance(impressions, list) else str(impressions))
    return ds.map_batches(
        attach_histories, batch_size=batch_size, batch_format="numpy", num_cpus=num_cpus,
        fn_kwargs={"cluster_dir": root, "columns": columns, "max_len": max_len,
                   "user_column": user_column or schema.user_column,
                   "time_column": time_column or schema.time_column, "vocabs": vocabs})


def train_one_epoch(cluster_dir: str | os.PathLike[str], impressions: Any, *,
                    item_column: str, cat_column: str, label_column: str = "label",
                    max_len: int = 50, batch_size: int = 256, n_items: int = 1000,
                    lr: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Feed the bundled LASER model (STA/GSTA) one epoch of cluster histories.

    History item ids are taken modulo `n_items` (the embedding table's size); the category
    column is a string column mapped through the cluster-global vocabulary."""
    import torch

    from ..model.layers import ModelConfig, SeqBatch
    from ..model.registry import build_model

    torch.manual_seed(seed)
    vocab = load_vocab(cluster_dir, cat_column)
    cfg = ModelConfig(n_items=n_items, n_cats=len(vocab) + 2, max_len=max_len, segment=5,
                      embed_dim=16, d_model=32, head_hidden=(32,))
    model = build_model("laser", cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    ds = history_dataset(cluster_dir, impressions, columns=[item_column, cat_column],
                         max_len=max_len, batch_size=batch_size)
    steps, rows, total = 0, 0, 0.0
    losses = []
    model.train()
    for b in ds.iter_torch_batches(batch_size=batch_size, drop_last=False):
        hist_item = b[f"hist_{item_column}"].long() % n_items
        sb = SeqBatch(hist_item=hist_item, hist_cat=b[f"hist_{cat_column}"].long(),
                      hist_aux=torch.zeros_like(hist_item), mask=b["hist_mask"].bool(),
                      target_item=(b[item_column].long() % n_items)[:, None],
                      target_cat=b[cat_column].long()[:, None],
                      label=b[label_column].float()[:, None])
        logits = model(sb)
        loss = loss_fn(logits, sb.label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        rows += int(hist_item.shape[0])
        total += float(loss) * int(hist_item.shape[0])
        losses.append(float(loss))
    return {"steps": steps, "rows": rows, "mean_loss": total / rows if rows else 0.0,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None}
