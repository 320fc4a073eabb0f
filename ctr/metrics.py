"""Binary-classification metrics used everywhere a number is reported.

All functions take ``labels`` (0/1) and ``scores`` or probabilities as 1-D arrays of the
same length and return plain floats. ``roc_auc`` raises ``InputError`` when only one class
is present, since AUC is undefined there.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ctr.errors import InputError


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    y = np.asarray(labels).astype(bool, copy=False).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise InputError(f"labels and scores differ in length: {y.size} vs {s.size}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"AUC needs both classes; got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    # mid-ranks: every run of equal scores gets the mean of its 1-based ranks
    boundaries = np.flatnonzero(np.diff(s_sorted)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    mid = (starts + ends + 1) / 2.0
    ranks = np.repeat(mid, ends - starts)
    pos_rank_sum = ranks[y[order]].sum()
    return float((pos_rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: ArrayLike, probs: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy in nats, probabilities clipped to ``[eps, 1-eps]``."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def calibration(labels: ArrayLike, probs: ArrayLike) -> float:
    """Mean predicted CTR divided by observed CTR (1.0 is perfectly calibrated)."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    observed = y.mean()
    if observed == 0.0:
        raise InputError("calibration is undefined when no row is positive")
    return float(np.asarray(probs, dtype=np.float64).mean() / observed)
