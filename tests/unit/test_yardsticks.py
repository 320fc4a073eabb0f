"""The demo's yardsticks: shown impressions kept as the served graph reads them, window AUCs on
exactly the window's impressions, recovery shares for AUC (higher is better) and log loss
(lower is better)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ctr.data.world import Impressions
from ctr.demo.yardsticks import (
    ShownLog,
    over_seeds,
    recovery,
    recovery_interval,
    recovery_share,
    scores_of,
    weighted_auc,
    window_aucs,
)
from ctr.metrics import roc_auc
from ctr.timeutil import to_us

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _impressions(n: int, rng: np.random.Generator) -> Impressions:
    missing = rng.random((n, 13)) < 0.2
    sparse = rng.integers(0, 2**32, (n, 26))
    sparse[rng.random((n, 26)) < 0.1] = -1
    return Impressions(
        dense=rng.integers(0, 50, (n, 13)),
        dense_missing=missing,
        sparse=sparse,
        label=np.zeros(n, np.int8),
        p_true=rng.uniform(0.01, 0.5, n),
    )


def _log(n: int = 400, seed: int = 0) -> ShownLog:
    rng = np.random.default_rng(seed)
    imp = _impressions(n, rng)
    log = ShownLog()
    for row in range(n):
        clicked = bool(rng.random() < imp.p_true[row])
        pctr = float(np.clip(imp.p_true[row] + rng.normal(0, 0.1), 0.001, 0.999))
        log.add(T0 + timedelta(minutes=row), imp, row, float(imp.p_true[row]), pctr, 1 + row // 200, clicked)
    return log


def test_shown_rows_carry_the_served_graphs_inputs() -> None:
    rng = np.random.default_rng(3)
    imp = _impressions(5, rng)
    log = ShownLog()
    for row in (4, 0):
        log.add(T0, imp, row, 0.1, 0.2, 1, True)
    shown = log.arrays()
    assert shown.dense.dtype == np.float32 and shown.dense.shape == (2, 13)
    assert np.array_equal(np.isnan(shown.dense[0]), imp.dense_missing[4])
    kept = ~imp.dense_missing[0]
    assert np.array_equal(shown.dense[1][kept], imp.dense[0][kept].astype(np.float32))
    assert shown.sparse.dtype == np.int64 and np.array_equal(shown.sparse[1], imp.sparse[0])
    assert shown.label.tolist() == [1, 1] and shown.version.tolist() == [1, 1]


def test_empty_log_gives_empty_arrays() -> None:
    shown = ShownLog().arrays()
    assert shown.dense.shape == (0, 13) and shown.sparse.shape == (0, 26) and shown.label.size == 0


def test_window_aucs_use_only_the_windows_impressions() -> None:
    shown = _log().arrays()
    drifted = np.asarray(shown.p_true[::-1], np.float32)  # an arbitrary second scorer
    scores = scores_of(shown, drifted, {"counterfactual": None})
    start, end = T0 + timedelta(minutes=100), T0 + timedelta(minutes=199)
    got = window_aucs(shown, scores, start, end)
    assert got["impressions"] == 100
    from ctr.metrics import roc_auc

    mask = slice(100, 200)
    assert got["oracle"] == round(roc_auc(shown.label[mask], shown.p_true[mask]), 4)
    assert got["served"] == round(roc_auc(shown.label[mask], shown.pctr[mask]), 4)
    assert "counterfactual" not in got  # not trained: left out


def test_window_without_both_classes_has_no_auc() -> None:
    shown = _log().arrays()
    scores = scores_of(shown, shown.pctr, {})
    got = window_aucs(shown, scores, T0 - timedelta(days=1), T0 - timedelta(hours=1))
    assert got["impressions"] == 0 and got["oracle"] is None


@pytest.mark.parametrize(
    ("served", "drifted", "cf", "share"),
    [(0.70, 0.66, 0.71, 0.8), (0.66, 0.66, 0.71, 0.0), (0.72, 0.66, 0.71, 1.2), (0.7, 0.7, 0.7, None)],
)
def test_recovery_share(served: float, drifted: float, cf: float, share: float | None) -> None:
    assert recovery_share(served, drifted, cf) == share


def test_recovery_of_log_loss_counts_lower_as_better() -> None:
    shown = _log().arrays()
    noisy = np.clip(shown.p_true + 0.2, 0.001, 0.999).astype(np.float32)  # miscalibrated: higher loss
    scores = scores_of(shown, noisy, {"counterfactual_24h": shown.p_true.astype(np.float32)})
    got = recovery(shown, scores, T0)
    assert got["impressions"] == 400
    loss = got["logloss"]
    assert got["ceiling"] == "counterfactual_24h" and loss["counterfactual_24h"] < loss["drifted"]
    expected = (loss["drifted"] - loss["served"]) / (loss["drifted"] - loss["counterfactual_24h"])
    assert got["logloss_recovery"] == pytest.approx(expected, abs=1e-3)
    assert got["auc"]["oracle"] == got["auc"]["counterfactual_24h"]


def test_the_best_recovery_is_measured_against_the_better_full_retrain() -> None:
    shown = _log().arrays()
    rng = np.random.default_rng(5)
    drifted = rng.random(len(shown.p_true)).astype(np.float32)  # no skill
    weak = np.clip(shown.p_true + rng.normal(0, 0.3, shown.p_true.size), 0.001, 0.999).astype(np.float32)
    strong = shown.p_true.astype(np.float32)
    both = {"counterfactual_24h": weak, "counterfactual_24h_recent": strong}
    got = recovery(shown, scores_of(shown, drifted, both), T0)
    auc = got["auc"]
    assert auc["counterfactual_24h"] < auc["counterfactual_24h_recent"]
    assert got["auc_recovery"] == recovery_share(auc["served"], auc["drifted"], auc["counterfactual_24h"])
    assert got["auc_recovery_best"] == recovery_share(auc["served"], auc["drifted"], auc["counterfactual_24h_recent"])
    assert got["auc_recovery_best"] < got["auc_recovery"]


def test_new_ads_calibration_says_when_the_served_pctr_entered_the_band_for_good() -> None:
    from ctr.demo.yardsticks import Shown, new_ads_calibration

    hours = np.repeat(np.arange(6), 100)  # 100 impressions in each simulated hour after the onset
    n = hours.size
    truth = np.full(n, 0.2)
    ratio = np.array([0.5, 1.05, 0.8, 0.95, 1.08, 1.02])[hours]  # in, out, then in for good from hour 3
    shown = Shown(
        np.array([to_us(T0 + timedelta(hours=int(h), minutes=30)) for h in hours]),
        np.zeros((n, 13), np.float32),
        np.zeros((n, 26), np.int64),
        truth,
        (truth * ratio).astype(np.float32),
        np.ones(n, np.int64),
        (np.arange(n) % 4 == 0).astype(np.int8),
    )
    new = np.arange(n) % 2 == 0
    windows = [(T0 + timedelta(hours=h + 1), T0 + timedelta(hours=h), T0 + timedelta(hours=h + 1)) for h in range(6)]
    out = new_ads_calibration(shown, new, T0, windows, min_impressions=10)
    assert [e["pctr_over_truth"] for e in out["series"]] == pytest.approx([0.5, 1.05, 0.8, 0.95, 1.08, 1.02], abs=1e-4)
    assert out["calibrated_at"] == (T0 + timedelta(hours=4)).isoformat() and out["hours_to_calibrated"] == 4.0
    assert out["new_ad_share"] == 0.5 and out["ctr"] == {"impressions": n, "observed": 0.25, "expected": 0.2}
    still_off = new_ads_calibration(shown, new, T0, windows[:3], min_impressions=10)
    assert still_off["calibrated_at"] is None and still_off["hours_to_calibrated"] is None


def test_weighted_auc_is_the_auc_of_the_rows_repeated_by_their_weights() -> None:
    rng = np.random.default_rng(3)
    label = (rng.random(500) < 0.3).astype(np.int8)
    scores = np.round(rng.random(500) + 0.3 * label, 2)  # rounded: many ties
    weights = rng.poisson(1.0, 500)
    repeated = np.repeat(np.arange(500), weights)
    assert weighted_auc(label, scores, np.ones(500)) == pytest.approx(roc_auc(label, scores), abs=1e-12)
    assert weighted_auc(label, scores, weights) == pytest.approx(roc_auc(label[repeated], scores[repeated]), abs=1e-12)


def test_recovery_interval_brackets_the_share_and_narrows_with_more_impressions() -> None:
    def scorers(n: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(n)
        truth = rng.random(n)
        label = (rng.random(n) < truth).astype(np.int8)
        noisy = [truth + rng.normal(0, sd, n) for sd in (0.6, 1.2, 0.45)]  # served, drifted, counterfactual
        return (label, *noisy)

    small, large = recovery_interval(*scorers(2_000)), recovery_interval(*scorers(40_000))
    assert small is not None and large is not None
    label, served, drifted, cf = scorers(40_000)
    share = recovery_share(*(roc_auc(label, x) for x in (served, drifted, cf)))
    assert share is not None and large[0] < share < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 2


def test_recovery_interval_is_none_without_a_gap_to_close() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random(3_000)
    label = (rng.random(3_000) < truth).astype(np.int8)
    same = truth + rng.normal(0, 0.5, 3_000)
    assert recovery_interval(label, truth, same, same + 1e-9 * rng.normal(size=3_000)) is None


def test_recovery_interval_pairs_the_scorers_on_the_same_resampled_impressions() -> None:
    # Served and counterfactual are the drifted scores plus small improvements: each AUC moves
    # with the resample far more than the gaps between them, which only a paired resample cancels.
    rng = np.random.default_rng(5)
    truth = rng.random(4_000)
    label = (rng.random(4_000) < truth).astype(np.int8)
    drifted = truth + rng.normal(0, 0.8, 4_000)
    served, cf = drifted + 0.1 * truth, drifted + 0.2 * truth
    interval = recovery_interval(label, served, drifted, cf)
    assert interval is not None
    assert interval[0] < recovery_share(*(roc_auc(label, x) for x in (served, drifted, cf))) < interval[1]
    assert interval[1] - interval[0] < 0.2


def test_over_seeds_measures_recovery_against_the_mean_of_the_yardsticks_draws() -> None:
    got = over_seeds(served=0.7313, drifted=0.7081, aucs=[0.741, 0.7201, 0.7322])
    assert got["aucs"] == [0.741, 0.7201, 0.7322]
    assert got["mean"] == pytest.approx((0.741 + 0.7201 + 0.7322) / 3, abs=1e-4)
    assert got["sd"] == pytest.approx(float(np.std([0.741, 0.7201, 0.7322], ddof=1)), abs=1e-4)
    # one draw alone (the first) would give 0.705; the draws' mean is the yardstick here
    assert got["auc_recovery"] == recovery_share(0.7313, 0.7081, got["mean"])
    assert recovery_share(0.7313, 0.7081, 0.741) < 0.8 < got["auc_recovery"]


def test_over_seeds_of_one_draw_has_no_spread_and_of_none_is_an_error() -> None:
    assert over_seeds(0.70, 0.66, [0.71]) == {"aucs": [0.71], "mean": 0.71, "sd": None, "auc_recovery": 0.8}
    assert over_seeds(0.70, 0.66, [0.65, 0.64])["auc_recovery"] is None  # no gap: the mean is below drifted
    with pytest.raises(ValueError, match="at least one"):
        over_seeds(0.70, 0.66, [])
