"""LASER: Segmented Target Attention (STA) → Global Stacked Target Attention (GSTA) → fusion.

Reference implementation of the model side of arXiv 2602.11562 (see shared PAPER.md). Where the
paper is silent this module decides, and says so in a comment:

* STA. The latest L events are split into L/w segments of w events, aligned so the newest event
  closes the last segment. Inside a segment each event gets a *sigmoid* gate of its target–event
  score (one per head, plus a learned per-head bias) — no normalisation across the segment, so a
  segment with nothing relevant goes silent. A segment vector is the gated sum of the values.
  Keys and values do not depend on the candidate: `encode_user` projects them once per user and
  `score` reuses them for every candidate (batched matmuls; cost linear in L).
* GSTA. M layers of target attention: the candidate is the query, the segment vectors (plus a
  learned recency embedding of the segment's position counted from the newest) are keys and
  values; each layer has a residual, LayerNorm and a feed-forward block (post-norm).
* Fusion. The GSTA output, the max-pool of the segment vectors, the r most recent segment vectors
  and the candidate embedding are concatenated into the shared MLP head.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .layers import (
    Head,
    ModelConfig,
    SeqBatch,
    SeqModel,
    UserState,
    last_positions,
    left_pad_to_multiple,
    masked_max,
    masked_softmax_attention,
)


def segmented_target_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor,
    w: int,
    gate: str = "sigmoid",
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """STA over segments of `w` events.

    q [B, C, H, dk] (one query per candidate), k [B, T, H, dk], v [B, T, H, dv], mask [B, T]
    (True = real), T a multiple of w. Returns segment vectors [B, C, S, H*dv] and the segment
    mask [B, S] (True = the segment holds at least one real event).

    gate="sigmoid": g = σ(q·k/√dk + bias), no normalisation (a segment may go silent).
    gate="softmax": the ablation; weights sum to one over the real events of a segment.
    """
    b, t, h, dk = k.shape
    if t % w:
        raise ValueError(f"segmented_target_attention: T={t} is not a multiple of w={w}")
    if gate not in ("sigmoid", "softmax"):
        raise ValueError(f"segmented_target_attention: gate={gate!r}, expected sigmoid|softmax")
    c = q.shape[1]
    s_count = t // w
    s = torch.einsum("bchd,bthd->bcht", q, k) / math.sqrt(dk)
    if bias is not None:
        s = s + bias.view(1, 1, h, 1)
    s = s.view(b, c, h, s_count, w)
    m = mask.view(b, 1, 1, s_count, w)
    mf = m.to(s.dtype)
    if gate == "sigmoid":
        g = torch.sigmoid(s) * mf
    else:
        g = torch.softmax(s.masked_fill(~m, torch.finfo(s.dtype).min / 2), dim=-1) * mf
    dv = v.shape[-1]
    vs = v.view(b, s_count, w, h, dv)
    seg = torch.einsum("bchsw,bswhv->bcshv", g, vs).reshape(b, c, s_count, h * dv)
    seg_mask = mask.view(b, s_count, w).any(dim=-1)
    return seg, seg_mask


class GstaLayer(nn.Module):
    """One target-attention layer over segment vectors: residual + LayerNorm + FFN."""

    def __init__(self, d: int, heads: int, ffn_mult: int, ffn: bool, norm: bool) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.norm1: nn.Module = nn.LayerNorm(d) if norm else nn.Identity()
        self.ffn: nn.Module | None = (
            nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d))
            if ffn
            else None
        )
        self.norm2: nn.Module = nn.LayerNorm(d) if (norm and ffn) else nn.Identity()

    def forward(self, h: Tensor, seg: Tensor, seg_mask: Tensor) -> Tensor:
        # h [B, C, d]; seg [B, C, S, d] (segment vectors differ per candidate); seg_mask [B, S]
        b, c, s, d = seg.shape
        nh = self.heads
        q = self.q(h).view(b, c, nh, d // nh)
        k, v = self.kv(seg).view(b, c, s, 2, nh, d // nh).unbind(3)
        sc = torch.einsum("bchd,bcshd->bchs", q, k) / math.sqrt(d // nh)
        m = seg_mask[:, None, None, :]
        sc = sc.masked_fill(~m, torch.finfo(sc.dtype).min / 2)
        a = torch.softmax(sc, dim=-1) * m.to(sc.dtype)
        att = torch.einsum("bchs,bcshd->bchd", a, v).reshape(b, c, d)
        h = self.norm1(h + self.out(att))
        if self.ffn is not None:
            h = self.norm2(h + self.ffn(h))
        return h


class Laser(SeqModel):
    """STA → GSTA → multi-resolution fusion → MLP head."""

    name = "laser"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        e, d, nh, dk = cfg.event_dim, cfg.d_model, cfg.heads, cfg.qk_dim
        self.k_proj = nn.Linear(e, nh * dk, bias=False)
        self.v_proj = nn.Linear(e, d)
        self.q_proj = nn.Linear(e, nh * dk)
        # A negative start keeps most gates half-closed at initialisation, so that long segments
        # of noise do not swamp the few relevant events before the scores have learned anything.
        self.gate_bias = nn.Parameter(torch.full((nh,), -1.0))
        self.n_segments = math.ceil(cfg.max_len / cfg.segment)
        self.recency = nn.Embedding(self.n_segments, d) if cfg.recency else None
        if self.recency is not None:
            nn.init.normal_(self.recency.weight, std=0.02)
        self.t_proj = nn.Linear(e, d)
        self.gsta = nn.ModuleList(
            GstaLayer(d, nh, cfg.ffn_mult, cfg.gsta_ffn, cfg.gsta_norm)
            for _ in range(cfg.gsta_layers)
        )
        fused = d + e + (d + cfg.recent_segments * d if cfg.fusion else 0)
        self.head = Head(fused, cfg.head_hidden)

    def cached_state_note(self) -> str:
        return "per-user keys and values of STA (projections of the L events)"

    def encode_user(self, b: SeqBatch) -> UserState:
        cfg = self.cfg
        x = self.embed.history(b, cfg.max_len)
        mask = last_positions(b.mask, cfg.max_len)
        x, mask = left_pad_to_multiple(x, mask, cfg.segment)
        bsz, t, _ = x.shape
        k = self.k_proj(x).view(bsz, t, cfg.heads, cfg.qk_dim)
        v = self.v_proj(x).view(bsz, t, cfg.heads, cfg.d_model // cfg.heads)
        return {"k": k, "v": v, "mask": mask}

    def segments(self, state: UserState, target: Tensor) -> tuple[Tensor, Tensor]:
        """Segment vectors [B, C, S, d] and their mask [B, S] for the candidates `target`."""
        cfg = self.cfg
        bsz, c, _ = target.shape
        q = self.q_proj(target).view(bsz, c, cfg.heads, cfg.qk_dim)
        seg, seg_mask = segmented_target_attention(
            q, state["k"], state["v"], state["mask"], cfg.segment, cfg.gate, self.gate_bias
        )
        if self.recency is not None:
            s = seg.shape[2]
            # position 0 = the newest segment; extra left padding only adds masked segments.
            pos = torch.arange(s - 1, -1, -1, device=seg.device).clamp(max=self.n_segments - 1)
            seg = seg + self.recency(pos)[None, None] * seg_mask[:, None, :, None].to(seg.dtype)
        return seg, seg_mask

    def score(self, state: UserState, b: SeqBatch) -> torch.Tensor:
        cfg = self.cfg
        t = self.embed.target(b)
        seg, seg_mask = self.segments(state, t)
        h = self.t_proj(t)
        for layer in self.gsta:
            h = layer(h, seg, seg_mask)
        feats = [h, t]
        if cfg.fusion:
            feats.append(masked_max(seg, seg_mask[:, None, :, None], dim=2))
            r = cfg.recent_segments
            if r:
                recent = seg[:, :, -r:, :]
                if recent.shape[2] < r:  # fewer segments than r: pad with zeros (oldest side)
                    recent = torch.nn.functional.pad(recent, (0, 0, r - recent.shape[2], 0))
                feats.append(recent.flatten(2))
        return self.head(torch.cat(feats, dim=-1))


__all__ = ["Laser", "GstaLayer", "segmented_target_attention", "masked_softmax_attention"]
