"""Tiny model configurations and batches shared by the model tests (CPU, milliseconds)."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from seqvault.model.layers import ModelConfig, SeqBatch  # noqa: E402

ALL = ["base", "din", "twin", "hstu", "transformer", "laser", "laser-softmax",
       "laser-no-recency", "laser-no-fusion", "laser-no-ffn-ln", "laser-no-ln", "laser-w5",
       "laser-m1"]


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return ModelConfig(n_items=60, n_cats=6, n_aux=3, embed_dim=8, d_model=16, qk_dim=4,
                       max_len=24, segment=4, base_len=8, twin_topk=6, head_hidden=(16,))


def make_batch(cfg: ModelConfig, lengths: list[int], t: int, c: int = 2, seed: int = 0) -> Any:
    """Left-padded batch; pad positions hold random junk ids (they must never matter)."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i, n in enumerate(lengths):
        if n:
            mask[i, -n:] = True
    return SeqBatch(
        hist_item=torch.randint(1, cfg.n_items + 1, (b, t), generator=g),
        hist_cat=torch.randint(1, cfg.n_cats + 1, (b, t), generator=g),
        hist_aux=torch.randint(0, cfg.n_aux + 1, (b, t), generator=g),
        mask=mask,
        target_item=torch.randint(1, cfg.n_items + 1, (b, c), generator=g),
        target_cat=torch.randint(1, cfg.n_cats + 1, (b, c), generator=g),
    )
