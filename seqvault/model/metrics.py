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


# two-sided 95% quantiles of Student's t, df = 1..30 (beyond: the normal's 1.96); a table keeps
# scipy out of the model's dependencies
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: float) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (df rounded down)."""
    d = int(df)
    if d < 1:
        return float("nan")
    return _T975[d - 1] if d <= len(_T975) else 1.96


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over seeds (NaN for one value)."""
    a = np.asarray(values, dtype=np.float64)
    if len(a) < 2:
        return float(a.mean()) if len(a) else float("nan"), float("nan")
    return float(a.mean()), t975(len(a) - 1) * float(a.std(ddof=1)) / np.sqrt(len(a))


def diff_ci(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(a) − mean(b) and the half-width of Welch's 95% interval (seeds not paired: the two
    models' initialisations differ even where the batch order is shared)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return d, float("nan")
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se2 = vx + vy
    if se2 == 0:
        return d, 0.0
    df = se2**2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return d, t975(df) * float(np.sqrt(se2))
