"""AUC and logloss in numpy (no scikit-learn dependency)."""

from __future__ import annotations

import numpy as np


def roc_auc(label: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve; ties get their average rank (Mann–Whitney U)."""
    y = np.asarray(label, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if len(y) != len(s):
        raise ValueError(f"roc_auc: {len(y)} labels but {len(s)} scores")
    n_pos = float((y > 0.5).sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # average 1-based rank of each distinct score
    upper = np.cumsum(counts)
    avg_rank = upper - (counts - 1) / 2.0
    ranks = avg_rank[inverse]
    return float((ranks[y > 0.5].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(label: np.ndarray, prob: np.ndarray, eps: float = 1e-7) -> float:
    y = np.asarray(label, dtype=np.float64).ravel()
    p = np.clip(np.asarray(prob, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
