"""The paper's baselines, with LASER's embeddings and head: Base, DIN, TWIN, HSTU, Transformer.

Each follows PAPER.md's description; choices the paper leaves open are commented. All of them
see the same latest `max_len` events (Base: the latest `base_len`), the same `Embedder`, and the
same `Head` architecture fed with [sequence representation ⊕ candidate embedding].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import (
    Head,
    ModelConfig,
    SeqBatch,
    SeqModel,
    UserState,
    last_positions,
    masked_softmax_attention,
)


class _TargetAttentionPool(nn.Module):
    """Softmax target attention (candidate → keys/values), the pooling Base/TWIN/Transformer use."""

    def __init__(self, in_dim: int, target_dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.k = nn.Linear(in_dim, cfg.heads * cfg.qk_dim, bias=False)
        self.v = nn.Linear(in_dim, cfg.d_model)
        self.q = nn.Linear(target_dim, cfg.heads * cfg.qk_dim)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, t, _ = x.shape
        cfg = self.cfg
        k = self.k(x).view(b, t, cfg.heads, cfg.qk_dim)
        v = self.v(x).view(b, t, cfg.heads, cfg.d_model // cfg.heads)
        return k, v

    def query(self, target: Tensor) -> Tensor:
        b, c, _ = target.shape
        return self.q(target).view(b, c, self.cfg.heads, self.cfg.qk_dim)


class Base(SeqModel):
    """Softmax target attention over the latest `base_len` (100) events only."""

    name = "base"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.pool = _TargetAttentionPool(cfg.event_dim, cfg.event_dim, cfg)
        self.head = Head(cfg.d_model + cfg.event_dim, cfg.head_hidden)

    def cached_state_note(self) -> str:
        return "per-user keys and values of the last 100 events"

    def encode_user(self, b: SeqBatch) -> UserState:
        n = min(self.cfg.base_len, self.cfg.max_len)
        x = self.embed.history(b, n)
        k, v = self.pool.keys_values(x)
        return {"k": k, "v": v, "mask": last_positions(b.mask, n)}

    def score(self, state: UserState, b: SeqBatch) -> Tensor:
        t = self.embed.target(b)
        att = masked_softmax_attention(self.pool.query(t), state["k"], state["v"], state["mask"])
        return self.head(torch.cat([att, t], -1))


class Din(SeqModel):
    """DIN: an MLP activation unit on [e, t, e−t, e⊙t] weighs each event; weights are not
    normalised (no softmax), the pooled vector is their weighted sum."""

    name = "din"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        e = cfg.event_dim
        self.unit = nn.Sequential(nn.Linear(4 * e, 80), nn.Sigmoid(), nn.Linear(80, 40),
                                  nn.Sigmoid(), nn.Linear(40, 1))
        self.proj = nn.Linear(e, cfg.d_model)
        self.head = Head(cfg.d_model + e, cfg.head_hidden)

    def cached_state_note(self) -> str:
        return "nothing beyond the embedding lookup (the activation unit needs the candidate)"

    def encode_user(self, b: SeqBatch) -> UserState:
        x = self.embed.history(b, self.cfg.max_len)
        return {"x": x, "mask": last_positions(b.mask, self.cfg.max_len)}

    def score(self, state: UserState, b: SeqBatch) -> Tensor:
        x, mask = state["x"], state["mask"]
        t = self.embed.target(b)
        xe = x[:, None, :, :].expand(-1, t.shape[1], -1, -1)  # [B, C, T, e]
        te = t[:, :, None, :].expand_as(xe)
        w = self.unit(torch.cat([xe, te, xe - te, xe * te], -1)).squeeze(-1)  # [B, C, T]
        w = w * mask[:, None, :].to(w.dtype)
        # Unnormalised sums grow with L; a fixed divisor (√L_max) tames their scale at any
        # history length without renormalising across events (what DIN avoids on purpose).
        pooled = torch.einsum("bct,bte->bce", w, x) / math.sqrt(self.cfg.max_len)
        return self.head(torch.cat([self.proj(pooled), t], -1))


class Twin(SeqModel):
    """TWIN: the general search unit scores all L events with the same target attention the
    exact search unit uses, keeps the top k, and softmax target attention runs over those."""

    name = "twin"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.pool = _TargetAttentionPool(cfg.event_dim, cfg.event_dim, cfg)
        self.head = Head(cfg.d_model + cfg.event_dim, cfg.head_hidden)

    def cached_state_note(self) -> str:
        return "per-user keys and values of the L events"

    def encode_user(self, b: SeqBatch) -> UserState:
        x = self.embed.history(b, self.cfg.max_len)
        k, v = self.pool.keys_values(x)
        return {"k": k, "v": v, "mask": last_positions(b.mask, self.cfg.max_len)}

    def score(self, state: UserState, b: SeqBatch) -> Tensor:
        k, v, mask = state["k"], state["v"], state["mask"]
        t = self.embed.target(b)
        q = self.pool.query(t)  # [B, C, H, dk]
        bsz, c, h, dk = q.shape
        n = k.shape[1]
        topk = min(self.cfg.twin_topk, n)
        with torch.no_grad():  # stage 1 (GSU): selection only, no gradient through top-k
            s = torch.einsum("bchd,bthd->bct", q, k)
            s = s.masked_fill(~mask[:, None, :], torch.finfo(s.dtype).min)
            idx = s.topk(topk, dim=-1).indices  # [B, C, k]
        # stage 2 (ESU): gather the k events per candidate, attend with softmax.
        bi = torch.arange(bsz, device=k.device)[:, None, None]
        ks, vs, ms = k[bi, idx], v[bi, idx], mask[bi, idx]  # [B, C, k, H, d]
        sc = torch.einsum("bchd,bckhd->bchk", q, ks) / math.sqrt(dk)
        m = ms[:, :, None, :]
        sc = sc.masked_fill(~m, torch.finfo(sc.dtype).min / 2)
        a = torch.softmax(sc, -1) * m.to(sc.dtype)
        att = torch.einsum("bchk,bckhv->bchv", a, vs).flatten(2)
        return self.head(torch.cat([att, t], -1))


def _position_from_newest(t: int, device: torch.device) -> Tensor:
    return torch.arange(t - 1, -1, -1, device=device)


class _EncoderLayer(nn.Module):
    """Pre-norm Transformer encoder layer (MHA through SDPA, then FFN)."""

    def __init__(self, d: int, heads: int, ffn_mult: int) -> None:
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d))

    def forward(self, x: Tensor, key_ok: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_ok[:, None, None, :])
        x = x + self.out(att.transpose(1, 2).reshape(b, t, d))
        return x + self.ffn(self.n2(x))


class Transformer(SeqModel):
    """Encoder layers over the sequence (learned positions counted from the newest event), then
    softmax target-attention pooling with the candidate as query."""

    name = "transformer"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        d = cfg.d_model
        self.inp = nn.Linear(cfg.event_dim, d)
        self.pos = nn.Embedding(cfg.max_len, d)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.layers = nn.ModuleList(
            _EncoderLayer(d, cfg.heads, cfg.ffn_mult) for _ in range(cfg.encoder_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.pool = _TargetAttentionPool(d, cfg.event_dim, cfg)
        self.head = Head(d + cfg.event_dim, cfg.head_hidden)

    def cached_state_note(self) -> str:
        return "per-user encoder output and its keys/values (the encoder ignores the candidate)"

    def encode_user(self, b: SeqBatch) -> UserState:
        x = self.embed.history(b, self.cfg.max_len)
        mask = last_positions(b.mask, self.cfg.max_len)
        pos = self.pos(_position_from_newest(x.shape[1], x.device))
        x = (self.inp(x) + pos) * mask[..., None].to(x.dtype)
        # A user with no event would give an all-masked attention row (NaN): let such rows see
        # their last (all-zero-input) position; the pooling below still ignores it via `mask`.
        key_ok = mask.clone()
        key_ok[:, -1] |= ~mask.any(dim=1)
        for layer in self.layers:
            x = layer(x, key_ok)
        k, v = self.pool.keys_values(self.norm(x))
        return {"k": k, "v": v, "mask": mask}

    def score(self, state: UserState, b: SeqBatch) -> Tensor:
        t = self.embed.target(b)
        att = masked_softmax_attention(self.pool.query(t), state["k"], state["v"], state["mask"])
        return self.head(torch.cat([att, t], -1))


class _HstuLayer(nn.Module):
    """HSTU: U, V, Q, K = split(SiLU(f1(x))); A = SiLU(QKᵀ)/L_max (masked, causal, no softmax);
    y = f2(LayerNorm(A V) ⊙ U); x + y. The relative position/time bias is left out (the
    learned positions at the input carry order instead)."""

    def __init__(self, d: int, heads: int, l_max: int) -> None:
        super().__init__()
        self.heads, self.l_max = heads, l_max
        self.norm = nn.LayerNorm(d)
        self.f1 = nn.Linear(d, 4 * d)
        self.f2 = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        b, t, d = x.shape
        nh = self.heads
        u, v, q, k = F.silu(self.f1(self.norm(x))).chunk(4, dim=-1)
        q, k, v = (z.view(b, t, nh, d // nh).transpose(1, 2) for z in (q, k, v))
        a = F.silu(q @ k.transpose(-1, -2)) / self.l_max
        a = a * allowed[:, None].to(a.dtype)
        y = (a @ v).transpose(1, 2).reshape(b, t, d)
        return x + self.f2(self.attn_norm(y) * u)


class Hstu(SeqModel):
    """HSTU layers over [history; candidate] with a causal mask; the candidate token's output
    goes to the head. One sequence per (user, candidate): quadratic in L for every candidate."""

    name = "hstu"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        d = cfg.d_model
        self.inp = nn.Linear(cfg.event_dim, d)
        self.pos = nn.Embedding(cfg.max_len + 1, d)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.layers = nn.ModuleList(
            _HstuLayer(d, cfg.heads, cfg.max_len + 1) for _ in range(cfg.encoder_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.head = Head(d + cfg.event_dim, cfg.head_hidden)

    def cached_state_note(self) -> str:
        return "nothing beyond the embedding lookup (the candidate is a token of the sequence)"

    def encode_user(self, b: SeqBatch) -> UserState:
        x = self.embed.history(b, self.cfg.max_len)
        return {"x": x, "mask": last_positions(b.mask, self.cfg.max_len)}

    def score(self, state: UserState, b: SeqBatch) -> Tensor:
        x, mask = state["x"], state["mask"]
        t = self.embed.target(b)
        bsz, c, e = t.shape
        n = x.shape[1]
        seq = torch.cat([x[:, None].expand(-1, c, -1, -1), t[:, :, None, :]], dim=2)
        seq = seq.reshape(bsz * c, n + 1, e)
        ok = torch.cat([mask, mask.new_ones(bsz, 1)], dim=1)  # the candidate token is real
        ok = ok[:, None].expand(-1, c, -1).reshape(bsz * c, n + 1)
        pos = self.pos(_position_from_newest(n + 1, x.device))
        h = (self.inp(seq) + pos) * ok[..., None].to(seq.dtype)
        causal = torch.ones(n + 1, n + 1, dtype=torch.bool, device=x.device).tril()
        allowed = causal[None] & ok[:, None, :]
        for layer in self.layers:
            h = layer(h, allowed)
        out = self.norm(h[:, -1]).view(bsz, c, -1)
        return self.head(torch.cat([out, t], -1))


__all__ = ["Base", "Din", "Twin", "Hstu", "Transformer"]
