"""Shared building blocks of every model: configuration, the input batch, embeddings, the head.

All models take the same `SeqBatch` (histories left-padded, newest event last, `mask` True = real
event) and use the same `Embedder` and `Head`, so that a comparison between them measures the
sequence module alone. Every model splits its forward pass into `encode_user` (what depends on the
history only, and can be computed once per user and shared by all candidates of a request) and
`score` (what depends on the candidate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UserState = dict[str, Tensor]


@dataclass(frozen=True)
class ModelConfig:
    """Every knob of every model; each model reads the fields it needs.

    The defaults are the paper's production configuration of LASER (L=1000, w=10, 2 heads,
    d=128, 16 query/key dims per head, M=2 GSTA layers).
    """

    n_items: int = 1000
    n_cats: int = 100
    n_aux: int = 0
    embed_dim: int = 64  # per table: an event vector is item ⊕ (category + aux), 2 * embed_dim
    d_model: int = 128
    heads: int = 2
    qk_dim: int = 16  # per head, for the target-attention queries and keys
    max_len: int = 1000  # L: the latest L events are used
    head_hidden: tuple[int, ...] = (256, 64)
    # LASER
    segment: int = 10  # w
    gsta_layers: int = 2  # M
    gate: str = "sigmoid"  # "sigmoid" (LASER) or "softmax" (ablation)
    recency: bool = True  # recency (segment-position) embedding
    fusion: bool = True  # multi-resolution fusion (max-pool + recent segments)
    gsta_ffn: bool = True
    gsta_norm: bool = True
    recent_segments: int = 2  # r
    # baselines
    base_len: int = 100  # Base: last 100 events
    twin_topk: int = 100  # TWIN: k kept by the general search unit
    encoder_layers: int = 1  # Transformer and HSTU depth
    ffn_mult: int = 2
    # False: item ids are not looked up (category only, for history and candidate) — the
    # diagnostic "+noitem" variants, which cannot memorise per-item click rates
    use_item: bool = True

    def __post_init__(self) -> None:
        positive = ("n_items", "n_cats", "embed_dim", "d_model", "heads", "qk_dim", "max_len",
                    "segment", "base_len", "twin_topk", "encoder_layers", "ffn_mult")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name}: got {value!r}, expected a positive int")
        if self.d_model % self.heads:
            raise ValueError(
                f"ModelConfig.d_model: got {self.d_model}, expected a multiple of heads={self.heads}"
            )
        if self.gate not in ("sigmoid", "softmax"):
            raise ValueError(f"ModelConfig.gate: got {self.gate!r}, expected 'sigmoid' or 'softmax'")
        if self.gsta_layers < 0 or self.recent_segments < 0 or self.n_aux < 0:
            raise ValueError("ModelConfig: gsta_layers, recent_segments and n_aux must be >= 0")

    def with_(self, **changes: Any) -> ModelConfig:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {sorted(unknown)}")
        return replace(self, **changes)

    @property
    def event_dim(self) -> int:
        return 2 * self.embed_dim


@dataclass
class SeqBatch:
    """One batch of requests: B users, each with a history of T events and C candidates.

    `mask` polarity: True = real event (the opposite of PyTorch's `key_padding_mask`).
    Histories are left-padded: the newest event is at position T-1.
    """

    hist_item: Tensor  # [B, T] int64, 0 = padding
    hist_cat: Tensor  # [B, T] int64
    hist_aux: Tensor  # [B, T] int64 (history-only side feature, e.g. a rating; 0 = none)
    mask: Tensor  # [B, T] bool
    target_item: Tensor  # [B, C] int64
    target_cat: Tensor  # [B, C] int64
    label: Tensor | None = None  # [B, C] float
    prob: Tensor | None = None  # [B, C] float: the true click probability, when known
    hint: Tensor | None = None  # [B, C] int64: the true count behind `prob` (oracle probe only)

    def to(self, device: torch.device | str) -> SeqBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return SeqBatch(
            self.hist_item.to(device, non_blocking=True),
            self.hist_cat.to(device, non_blocking=True),
            self.hist_aux.to(device, non_blocking=True),
            self.mask.to(device, non_blocking=True),
            self.target_item.to(device, non_blocking=True),
            self.target_cat.to(device, non_blocking=True),
            move(self.label),
            move(self.prob),
            move(self.hint),
        )

    @property
    def batch_size(self) -> int:
        return int(self.hist_item.shape[0])

    @property
    def n_candidates(self) -> int:
        return int(self.target_item.shape[1])


def last_positions(t: Tensor, n: int) -> Tensor:
    """The last `n` positions along dim 1 (left padding keeps the newest events there)."""
    return t if t.shape[1] <= n else t[:, -n:]


def left_pad_to_multiple(x: Tensor, mask: Tensor, w: int) -> tuple[Tensor, Tensor]:
    """Pad on the left so that T is a multiple of w: segments then align with the newest event,
    and adding more left padding only adds empty segments (which every model ignores)."""
    t = x.shape[1]
    extra = (-t) % w
    if extra == 0:
        return x, mask
    x = F.pad(x, (0, 0, extra, 0))
    mask = F.pad(mask, (extra, 0), value=False)
    return x, mask


class Embedder(nn.Module):
    """Item, category and auxiliary embedding tables, shared in shape by every model."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        e = cfg.embed_dim
        self.use_item = cfg.use_item
        self.item = nn.Embedding(cfg.n_items + 1, e, padding_idx=0)
        self.cat = nn.Embedding(cfg.n_cats + 1, e, padding_idx=0)
        self.aux = nn.Embedding(cfg.n_aux + 1, e, padding_idx=0)
        for table in (self.item, self.cat, self.aux):
            nn.init.normal_(table.weight, std=0.05)
            with torch.no_grad():
                table.weight[0].zero_()

    def history(self, b: SeqBatch, last: int | None = None) -> Tensor:
        """[B, min(T, last), 2e] for the latest `last` positions; padded positions are exactly
        zero, so their ids can never leak in. Slicing before the lookup keeps a model that
        reads the last 100 of 10,000 events from paying for the other 9,900."""
        item, cat, aux, mask = b.hist_item, b.hist_cat, b.hist_aux, b.mask
        if last is not None:
            item, cat, aux, mask = (last_positions(t, last) for t in (item, cat, aux, mask))
        x = torch.cat([self._item(item), self.cat(cat) + self.aux(aux)], -1)
        return x * mask.unsqueeze(-1).to(x.dtype)

    def _item(self, ids: Tensor) -> Tensor:
        e = self.item(ids)
        return e if self.use_item else torch.zeros_like(e)

    def target(self, b: SeqBatch) -> Tensor:
        """[B, C, 2e]"""
        return torch.cat([self._item(b.target_item), self.cat(b.target_cat)], -1)


class Head(nn.Module):
    """The ranking head shared by all models: an MLP over the concatenated features.

    The paper uses RankMixer; an MLP is the stand-in the brief allows.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for h in hidden:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        layers.append(nn.Linear(last, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, feats: Tensor) -> Tensor:
        return self.mlp(feats).squeeze(-1)


def masked_softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Softmax target attention of C queries per user over T keys.

    q [B, C, H, dk], k [B, T, H, dk], v [B, T, H, dv], mask [B, T] (True = real) → [B, C, H*dv].
    A user with no real event gets a zero vector, not NaN.
    """
    s = torch.einsum("bchd,bthd->bcht", q, k) / math.sqrt(q.shape[-1])
    m = mask[:, None, None, :]
    s = s.masked_fill(~m, torch.finfo(s.dtype).min / 2)
    w = torch.softmax(s, dim=-1) * m.to(s.dtype)
    out = torch.einsum("bcht,bthv->bchv", w, v)
    return out.flatten(2)


def masked_max(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Max over `dim` of real positions only; zero where there is none."""
    neg = torch.finfo(x.dtype).min
    m = mask.to(torch.bool)
    out = x.masked_fill(~m, neg).amax(dim=dim)
    any_real = m.any(dim=dim)
    return torch.where(any_real, out, torch.zeros_like(out))


class SeqModel(nn.Module):
    """Common interface: forward = score(encode_user(batch), batch) → logits [B, C]."""

    name = "seq"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = Embedder(cfg)

    def encode_user(self, b: SeqBatch) -> UserState:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, state: UserState, b: SeqBatch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, b: SeqBatch) -> Tensor:
        return self.score(self.encode_user(b), b)

    def cached_state_note(self) -> str:
        """What `encode_user` computes once per user (reported beside the FLOPs table)."""
        return "nothing"
