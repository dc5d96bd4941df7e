"""laser_reader: from the store to the padded tensors a long-sequence model eats, leakage-free.

    from seqvault.laser_reader import LaserReader
    reader = LaserReader(vault, columns=["item_id", "category"], max_len=1000)
    batch = reader.read_batch([7, 8, 9], before=[t7, t8, t9])  # events strictly before t_b

The public face of `seqvault/laser/` (reader, batches, features); `ImpressionDataset` and
`ImpressionBatch` (PyTorch) are served lazily, so importing this module never imports torch.
Design: docs/design/laser_reader.md.
"""

from __future__ import annotations

import importlib
from typing import Any

from .laser.batch import JaggedBatch, LaserBatch
from .laser.features import StringMap, TimeBuckets
from .laser.reader import PAD_TO, LaserReader

__all__ = ["PAD_TO", "JaggedBatch", "LaserBatch", "LaserReader", "StringMap", "TimeBuckets"]


def __getattr__(name: str) -> Any:  # ImpressionDataset, ImpressionBatch (not in __all__: lazy)
    # The dataset subclasses torch's IterableDataset: import torch only when it is asked for.
    if name in ("ImpressionDataset", "ImpressionBatch"):
        return getattr(importlib.import_module(".laser.dataset", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
