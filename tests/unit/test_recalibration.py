"""``fit_offset``: the logit shift that makes predicted clicks equal observed ones."""

from __future__ import annotations

import numpy as np
import pytest

from ctr.recalibration import MAX_OFFSET, fit_offset


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_the_shifted_model_predicts_the_observed_clicks() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(-1.5, 1.0, 20_000)
    y = (rng.random(z.size) < _sigmoid(z + 0.7)).astype(np.int8)  # the world's rate is e^0.7 higher in odds
    b = fit_offset(z, y)
    assert _sigmoid(z + b).sum() == pytest.approx(y.sum(), rel=1e-6)
    assert b == pytest.approx(0.7, abs=0.05)


def test_a_calibrated_model_is_left_alone() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(-1.0, 1.2, 50_000)
    y = (rng.random(z.size) < _sigmoid(z)).astype(np.int8)
    assert abs(fit_offset(z, y)) < 0.03


def test_the_offset_is_capped_and_degenerate_labels_give_zero() -> None:
    z = np.full(100, 4.0)
    y = np.zeros(100)
    y[0] = 1  # observed 1 %, predicted 98 %: the exact shift (about -8.6) is beyond the cap
    assert fit_offset(z, y) == -MAX_OFFSET
    assert fit_offset(z, np.zeros(100)) == 0.0
    assert fit_offset(z, np.ones(100)) == 0.0
    assert fit_offset(np.array([]), np.array([])) == 0.0
    with pytest.raises(ValueError, match="3 logits for 2 labels"):
        fit_offset(np.zeros(3), np.zeros(2))
