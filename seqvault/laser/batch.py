"""Batch containers of `laser_reader` and the vectorised padding that builds them.

Mask polarity: ``mask[b, t]`` is True where position t of row b holds a real event, False on
padding. PyTorch's `nn.MultiheadAttention(key_padding_mask=...)` wants the opposite (True =
ignore): use `LaserBatch.key_padding_mask()`. `F.scaled_dot_product_attention`'s boolean
`attn_mask` uses True = take part in attention: use `LaserBatch.sdpa_mask()`.

Arrays are numpy after a read; `to_torch()` returns the same container holding tensors (the
helpers work on both).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

TORCH_HINT = "pip install 'seqvault[torch]'"


def import_torch() -> Any:
    """torch, imported on first use; a missing extra says how to install it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"this needs PyTorch, which is not installed: {TORCH_HINT}") from exc
    return torch


def positions_mask(lengths: np.ndarray, width: int, side: str) -> np.ndarray:
    """[B, width] bool: True on the `lengths[b]` real positions of row b (left: at the end)."""
    cols = np.arange(width, dtype=np.int64)[None, :]
    n = lengths.astype(np.int64)[:, None]
    if side == "left":
        return cols >= (width - n)
    return cols < n


def pad_flat(flat: np.ndarray, mask: np.ndarray, pad_value: Any) -> np.ndarray:
    """Scatter the concatenated per-row values `flat` into a [B, T] array at `mask`.

    Boolean-mask assignment fills True positions in row-major order, so row b gets its
    `lengths[b]` values in order: one vectorised scatter per column, no loop over rows or events.
    """
    out = np.full(mask.shape, pad_value, dtype=flat.dtype)
    out[mask] = flat
    return out


def _to_tensor(torch: Any, arr: Any, device: Any, pin: bool) -> Any:
    if isinstance(arr, torch.Tensor):
        t = arr  # already converted: only pin / move
    elif not isinstance(arr, np.ndarray) or arr.dtype == object or arr.dtype.kind in "US":
        return arr  # string user ids stay a numpy array
    else:
        if arr.dtype.kind == "u" and arr.dtype != np.uint8:
            # torch's uint16/32/64 support few ops (no embedding lookups): widen to int64.
            arr = arr.astype(np.int64)
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if pin and not t.is_pinned():
        t = t.pin_memory()
    if device is not None:
        t = t.to(device, non_blocking=pin)
    return t


def convert_tensors(obj: Any, device: Any, pin_memory: bool) -> Any:
    torch = import_torch()
    pin = bool(pin_memory)
    if pin and not torch.cuda.is_available():
        warnings.warn("to_torch(pin_memory=True): no CUDA device, memory is not pinned",
                      RuntimeWarning, stacklevel=3)
        pin = False
    changes: dict[str, Any] = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, dict):
            changes[f.name] = {k: _to_tensor(torch, a, device, pin) for k, a in v.items()}
        elif isinstance(v, np.ndarray | torch.Tensor):
            changes[f.name] = _to_tensor(torch, v, device, pin)
    return replace(obj, **changes)


@dataclass
class LaserBatch:
    """A padded batch: one [B, T] array per column, chronological in each row.

    - `values[col]`: [B, T]; also `batch[col]`. String columns hold the mapped int64 ids.
    - `lengths`: [B] int64, real events per row (<= T).
    - `mask`: [B, T] bool, **True = real event**, False = padding.
    - `user_id`: [B] (int64, or object array of str for string-keyed stores).
    - `age_ms`: [B, T] int64, request time − event time in ms (0 on padding); None when time
      features are off.
    - `age_bucket`: [B, T] int64 log-spaced age bucket (0 = padding; see `TimeBuckets`).
    - `request_time`: [B] int64 reference time per row in the store's unit (None when time
      features are off).
    - `padding_side`: "left" (newest event in the last column) or "right".
    """

    values: dict[str, Any]
    lengths: Any
    mask: Any
    user_id: Any
    age_ms: Any = None
    age_bucket: Any = None
    request_time: Any = None
    padding_side: str = "left"

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    def key_padding_mask(self) -> Any:
        """[B, T] bool for `nn.MultiheadAttention(key_padding_mask=...)`: True = ignore (= ~mask).

        A row with no events is all True; attention over it yields NaN, so models must handle
        empty histories (e.g. skip or zero those rows).
        """
        return ~self.mask

    def sdpa_mask(self, causal: bool = False) -> Any:
        """Boolean `attn_mask` for `F.scaled_dot_product_attention` (True = attend).

        `causal=False`: [B, 1, 1, T], broadcasts over heads and queries (target attention,
        bidirectional encoders). `causal=True`: [B, 1, T, T], query t sees keys <= t that are real
        events; a padded query position sees only itself so no row is all False (its output is
        padding to be ignored). Rows of users with no events are all False with `causal=False`:
        SDPA returns NaN there.
        """
        m = self.mask
        if not causal:
            return m[:, None, None, :]
        t = m.shape[1]
        if isinstance(m, np.ndarray):
            tri = np.tril(np.ones((t, t), dtype=bool))
            eye = np.eye(t, dtype=bool)
        else:
            torch = import_torch()
            tri = torch.ones((t, t), dtype=torch.bool, device=m.device).tril()
            eye = torch.eye(t, dtype=torch.bool, device=m.device)
        allowed = tri[None, :, :] & m[:, None, :]
        allowed = allowed | (eye[None, :, :] & ~m[:, :, None])
        return allowed[:, None, :, :]

    def to_torch(self, device: Any = None, pin_memory: bool = False) -> LaserBatch:
        """The same batch holding torch tensors (unsigned ints above uint8 become int64; string
        user ids stay numpy). Tensors already there are only pinned / moved."""
        return convert_tensors(self, device, pin_memory)

    def pin_memory(self) -> LaserBatch:
        """Called by `DataLoader(pin_memory=True)`."""
        return self.to_torch(pin_memory=True)

    def to_jagged(self) -> JaggedBatch:
        """The jagged form of this batch (numpy only)."""
        mask = np.asarray(self.mask)
        lengths = np.asarray(self.lengths)
        offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return JaggedBatch(
            values={k: np.asarray(v)[mask] for k, v in self.values.items()},
            offsets=offsets, lengths=lengths, user_id=self.user_id,
            age_ms=None if self.age_ms is None else np.asarray(self.age_ms)[mask],
            age_bucket=None if self.age_bucket is None else np.asarray(self.age_bucket)[mask],
            request_time=self.request_time)


@dataclass
class JaggedBatch:
    """A jagged batch (HSTU-style): per column one flat array of all rows' events, row b being
    `values[col][offsets[b]:offsets[b+1]]` in chronological order. `offsets` is [B+1] int64,
    `lengths` = diff(offsets). `age_ms`/`age_bucket` are flat like the values."""

    values: dict[str, Any]
    offsets: Any
    lengths: Any
    user_id: Any
    age_ms: Any = None
    age_bucket: Any = None
    request_time: Any = None

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def row(self, b: int, name: str) -> Any:
        return self.values[name][int(self.offsets[b]):int(self.offsets[b + 1])]

    def to_torch(self, device: Any = None, pin_memory: bool = False) -> JaggedBatch:
        return convert_tensors(self, device, pin_memory)
