"""Diagnostic probes: models that are *handed* what the sequence models must find.

`Oracle` ("perfect features") gets the true capped count behind the synthetic truth (the
`hint` column: m for the count benchmark, k* for the burst benchmark) plus the same candidate
embedding and head as every model, and sees no history at all. Trained with the same protocol,
it bounds what the sequence module can add: the gap between it and the Bayes ceiling is what the
shared head and item table cannot learn from this much data (the item-quality term); the gap
between it and a sequence model is what that model's sequence module fails to extract.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import Head, ModelConfig, SeqBatch, SeqModel, UserState

MAX_HINT = 64  # larger counts share the last embedding (the truths cap at 12)


class Oracle(SeqModel):
    name = "oracle"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.count = nn.Embedding(MAX_HINT + 1, cfg.event_dim)
        self.head = Head(2 * cfg.event_dim, cfg.head_hidden)

    def cached_state_note(self) -> str:
        return "nothing (reads the true count, no history)"

    def encode_user(self, b: SeqBatch) -> UserState:
        return {}

    def score(self, state: UserState, b: SeqBatch) -> Tensor:
        if b.hint is None:
            raise ValueError("oracle: the batch has no hint (only synthetic data carries the "
                             "true count)")
        t = self.embed.target(b)
        h = self.count(b.hint.clamp(0, MAX_HINT))
        return self.head(torch.cat([h, t], -1))


__all__ = ["Oracle"]
