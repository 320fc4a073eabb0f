"""Recalibration to the newest rows: one offset added to the model's logit.

A base-rate shift (more or fewer clicks for the same features) leaves the ranking — AUC —
almost unchanged and moves every pCTR by the same factor in odds; a model retrained on days
before and after the shift learns a rate between the two. The offset ``b`` is the maximum
likelihood intercept shift on rows the model did not train on (the validation rows, the newest
of a run), so that the shifted model's predicted clicks equal the observed ones:

    p_i(b) = σ(z_i + b)                 z_i: the model's logit of row i
    Σ_i p_i(b) = Σ_i y_i                the log loss's stationary point in b (convex)

Newton's method on ``b``: ``b ← b − Σ(p − y) / Σ p(1 − p)``, from 0; ``|b|`` is capped at
``max_offset`` (a factor of e^2 ≈ 7.4 in odds) so a validation slice with few clicks cannot
throw the model off. Adding ``b`` to the head's bias leaves the order of any two rows unchanged
(AUC is the same), and the exported graph carries it.

Shapes: ``logits`` (n,) float, ``labels`` (n,) 0/1. ``ValueError`` when they differ in length.
With no rows, or all rows of one label, the offset is 0 (nothing to fit against).

>>> z = np.zeros(4)
>>> round(fit_offset(z, np.array([1, 0, 0, 0])), 4)  # predicted 0.5 each, observed 0.25: log(1/3)
-1.0986
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

MAX_OFFSET = 2.0


def fit_offset(
    logits: NDArray[Any], labels: NDArray[Any], max_offset: float = MAX_OFFSET, steps: int = 50, tol: float = 1e-9
) -> float:
    """The logit offset ``b`` with Σσ(z + b) = Σy (module docstring), capped at ``±max_offset``."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if z.shape != y.shape:
        raise ValueError(f"{z.size} logits for {y.size} labels")
    clicks = float(y.sum())
    if z.size == 0 or clicks == 0 or clicks == y.size:
        return 0.0
    b = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(z + b)))
        step = float((p.sum() - clicks) / max(float((p * (1 - p)).sum()), 1e-12))
        b = float(np.clip(b - step, -max_offset, max_offset))
        if abs(step) < tol:
            break
    return b
