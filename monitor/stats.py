"""Statistics for the monitor: AUC with a DeLong confidence interval, and a label-free AUC.

``delong_auc(labels, scores, confidence)`` returns the AUC and its normal-approximation
interval from DeLong's variance (placements computed with mid-ranks, O(n log n)).
``expected_auc(probs)`` estimates AUC without labels, treating calibrated pCTRs as the
probabilities of a click (in the spirit of NannyML's CBPE): the expected share of
(click, no-click) pairs the scores order correctly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ctr.errors import InputError


@dataclass(frozen=True)
class AucInterval:
    auc: float
    lower: float
    upper: float
    std_error: float


def _midranks_sorted(sorted_x: NDArray[Any]) -> NDArray[Any]:
    """Mid-ranks (1-based, ties share their mean rank) of an already sorted array."""
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [sorted_x.size]))
    return np.repeat((starts + ends + 1) / 2.0, ends - starts)


def _z(confidence: float) -> float:
    """Two-sided normal quantile for ``confidence`` (bisection on erf; no SciPy needed)."""
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    target = 1.0 - (1.0 - confidence) / 2.0
    lo, hi = 0.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2.0
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def delong_auc(
    labels: ArrayLike, scores: ArrayLike, confidence: float = 0.95, order: NDArray[Any] | None = None
) -> AucInterval:
    """AUC and DeLong interval; ``InputError`` unless both classes are present.

    ``order``: ``np.argsort(scores, kind="stable")`` when the caller already has it.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    m = int(y.sum())
    n = y.size - m
    if m == 0 or n == 0:
        raise InputError(f"AUC needs both classes; got {m} positives and {n} negatives")
    # one sort serves all three rankings: subsets of a sorted array stay sorted
    order = np.argsort(s, kind="stable") if order is None else order
    s_sorted, y_sorted = s[order], y[order]
    all_ranks = _midranks_sorted(s_sorted)
    pos_ranks, neg_ranks = all_ranks[y_sorted], all_ranks[~y_sorted]
    auc = (pos_ranks.sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (pos_ranks - _midranks_sorted(s_sorted[y_sorted])) / n  # placement of each positive among negatives
    v01 = 1.0 - (neg_ranks - _midranks_sorted(s_sorted[~y_sorted])) / m
    var = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (np.var(v01, ddof=1) / n if n > 1 else 0.0)
    se = math.sqrt(max(var, 0.0))
    z = _z(confidence)
    return AucInterval(float(auc), float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se)), se)


def expected_auc(probs: ArrayLike, order: NDArray[Any] | None = None) -> float:
    """Label-free AUC estimate from calibrated probabilities (ties count one half).

    ``order``: ``np.argsort(probs, kind="stable")`` when the caller already has it.
    """
    p = np.asarray(probs, dtype=np.float64).ravel()
    if p.size < 2:
        raise InputError("expected AUC needs at least two predictions")
    order = np.argsort(p, kind="stable") if order is None else order
    ps = p[order]
    neg_weight = 1.0 - ps
    # for each i: expected negatives with a strictly lower score, plus half of the tied ones
    cum_neg = np.cumsum(neg_weight) - neg_weight
    boundaries = np.flatnonzero(np.diff(ps)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [ps.size]))
    group_neg = np.add.reduceat(neg_weight, starts)
    before_group = np.repeat(cum_neg[starts], ends - starts)
    tied = np.repeat(group_neg, ends - starts) - neg_weight  # others in the same tie group
    correct = (ps * (before_group + 0.5 * tied)).sum()
    total = ps.sum() * neg_weight.sum() - (ps * neg_weight).sum()
    return float(correct / total) if total > 0 else float("nan")


@dataclass(frozen=True)
class CalibrationInterval:
    """Predicted / observed clicks (1.0: calibrated) and its interval."""

    ratio: float
    lower: float
    upper: float


def calibration_interval(labels: ArrayLike, probs: ArrayLike, confidence: float) -> CalibrationInterval | None:
    """``E / O`` (predicted over observed clicks) with the interval ``E / (O ± z·√V)``, where
    ``V = Σ p(1−p)`` is the variance of the click count were the pCTRs true; None without clicks.

    >>> round(calibration_interval([1, 0, 0, 0] * 250, [0.25] * 1000, 0.95).ratio, 3)
    1.0
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    observed, expected = float(y.sum()), float(p.sum())
    if observed <= 0:
        return None
    spread = _z(confidence) * math.sqrt(float(np.sum(p * (1.0 - p))))
    low_count, high_count = observed - spread, observed + spread
    upper = expected / low_count if low_count > 0 else math.inf
    return CalibrationInterval(expected / observed, expected / high_count, upper)


def normalized_entropy(labels: ArrayLike, probs: ArrayLike, eps: float = 1e-7) -> float | None:
    """Log loss over the entropy of the observed click rate (He et al. 2014): < 1 beats always
    predicting the base rate; None when every label is the same."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1.0 - eps)
    rate = float(y.mean()) if y.size else 0.0
    if not 0.0 < rate < 1.0:
        return None
    loss = float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
    return loss / -(rate * math.log(rate) + (1.0 - rate) * math.log(1.0 - rate))
