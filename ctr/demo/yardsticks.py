"""Yardsticks for the demo's AUC: what the served model could have been on the same traffic.

The simulation knows every shown impression's true click probability, so beside the monitor's
windowed AUC of the served pCTR the report carries, on the **same shown impressions**:

- the **oracle** AUC: the true probabilities as scores (no model can rank better, in expectation);
- the **drifted** model: version 1 (trained before the drift) scored offline, as if never replaced;
- the **counterfactual full retrains**: full runs on all data up to a moment (the history days
  plus every impression matured by then, exported from the event log), scored offline on what
  was shown later: ``counterfactual`` up to the first trigger after the drift onset (what a full
  retrain could have done instead of the first incremental one), ``counterfactual_24h`` up to
  the start of the recovery window (what a full retrain with that much drifted data reaches),
  and ``counterfactual_24h_recent``: from scratch on the 24 h after the onset alone (no history:
  what forgetting the old regime reaches — it knows the onset, which no retrain does).

New ads (``new_ads_calibration``): per monitor window, the served pCTR of the impressions whose
ad id is new (``SyntheticWorld.shows_new_ad``) against their true click probability (expected
clicks, free of label noise), and
when that ratio entered 1 ± 10 % for good. With exploration on (``CTR_EXPLORATION``) the same
figures, and the shown impressions' CTR, say what exploring cost and bought.

Recovery = (served − drifted) / (counterfactual_24h − drifted), for AUC and for log loss (a
base-rate shift moves log loss, not AUC), on the impressions shown from ``recovery_from`` on;
``auc_recovery_best`` uses the better of the two 24-h counterfactuals instead.
``auc_recovery_interval`` gives, for each counterfactual, a 95 % paired bootstrap interval of
the AUC recovery over those impressions (``recovery_interval``): how much of a value is the
evaluation's sampling noise. ``over_seeds`` adds the other noise, the yardstick's own: the two
recovery yardsticks trained again with more seeds, and the recovery against their mean AUC.
A share is ``None`` when the counterfactual is not better than the
drifted model (no gap to close), and above 1 when the served model beats it (a later retrain saw
more of the new regime).

>>> import numpy as np
>>> recovery_share(served=0.70, drifted=0.66, counterfactual=0.71)
0.8
>>> recovery_share(served=0.70, drifted=0.70, counterfactual=0.69) is None
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctr.cpus import usable_cores
from ctr.metrics import log_loss, roc_auc
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS, day_name
from ctr.timeutil import to_us

if TYPE_CHECKING:
    from ctr.data.world import Impressions


@dataclass(frozen=True)
class Shown:
    """Shown impressions as arrays, in the order shown; n rows.

    at_us: (n,) int64 µs since the Unix epoch; dense: (n, 13) float32, NaN where missing;
    sparse: (n, 26) int64 hashes, -1 where missing (the served graph's inputs); p_true: (n,)
    float64; pctr: (n,) float32 as served; version: (n,) int64 serving version; label: (n,) int8
    (clicked within the attribution window: the monitor's and the export's label rule).
    """

    at_us: NDArray[Any]
    dense: NDArray[Any]
    sparse: NDArray[Any]
    p_true: NDArray[Any]
    pctr: NDArray[Any]
    version: NDArray[Any]
    label: NDArray[Any]

    def between(self, start: datetime, end: datetime) -> NDArray[Any]:
        """Mask of the impressions shown in [start, end] (the monitor window's bounds)."""
        return (self.at_us >= to_us(start)) & (self.at_us <= to_us(end))


class ShownLog:
    """Collects shown impressions one at a time (the traffic simulator's side)."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, NDArray[Any], NDArray[Any], float, float, int, int]] = []

    def add(
        self, at: datetime, imp: Impressions, row: int, p_true: float, pctr: float, version: int, clicked: bool
    ) -> None:
        dense = np.where(imp.dense_missing[row], np.nan, imp.dense[row]).astype(np.float32)
        self._rows.append((to_us(at), dense, imp.sparse[row].astype(np.int64), p_true, pctr, version, int(clicked)))

    def __len__(self) -> int:
        return len(self._rows)

    def arrays(self) -> Shown:
        n = len(self._rows)
        if n == 0:
            empty = np.empty(0)
            return Shown(
                empty.astype(np.int64),
                np.empty((0, len(DENSE_COLUMNS)), np.float32),
                np.empty((0, len(SPARSE_COLUMNS)), np.int64),
                empty,
                empty.astype(np.float32),
                empty.astype(np.int64),
                empty.astype(np.int8),
            )
        at, dense, sparse, p_true, pctr, version, label = zip(*self._rows, strict=True)
        return Shown(
            np.array(at, np.int64),
            np.stack(dense),
            np.stack(sparse),
            np.array(p_true, np.float64),
            np.array(pctr, np.float32),
            np.array(version, np.int64),
            np.array(label, np.int8),
        )


def score_graph(graph: Path, shown: Shown) -> NDArray[Any]:
    """pCTR ``(n,)`` float32 of ``graph`` (a served ``model.onnx``) on the shown impressions."""
    from ctr.onnx_export import onnx_score, onnx_session

    return onnx_score(onnx_session(graph, threads=usable_cores()), shown.dense, shown.sparse)


def counterfactual_full(
    db_url: str,
    history: Path,
    history_days: list[int],
    since: datetime,
    until: datetime,
    experiment: str,
    work: Path,
    attribution: timedelta,
    seed: int | None = None,
) -> Path:
    """Train the counterfactual full retrain; returns its staged ``model.onnx``.

    Its data: the ``history_days`` of ``history`` (none: the event log alone) followed by the event log's matured
    impressions served in [since, until) (one exported day each); the newest 20 % of the last
    exported day validates; labels by the ``attribution`` window (the monitor's). Trained on CPU
    (``work/repo`` is its own repository: nothing of the demo's is touched), with the experiment's
    own seed unless ``seed`` is given. ``InputError`` when the event log holds no matured
    impression there.
    """
    from ctr.errors import InputError
    from ctr.events.store import EventStore
    from ctr.events.training_export import ExportWindow, export_days
    from ctr.repository import ONNX_FILE, ModelRepository
    from ctr.retrain import link_days, split_day
    from ctr.train import TrainSpec, train_candidate

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    link_days(history, history_days, data)
    summary = export_days(EventStore(db_url), ExportWindow(since, until, attribution, until), work / "events")
    exported = [d["day"] for d in summary["days"] if d["rows"] > 0]
    if not exported:
        raise InputError(f"no matured impressions between {since.isoformat()} and {until.isoformat()}")
    day = max(history_days) + 1 if history_days else 0
    train_days = list(history_days)
    for k in exported[:-1]:
        os.symlink((work / "events" / day_name(k)).resolve(), data / day_name(day))
        train_days.append(day)
        day += 1
    split_day(work / "events" / day_name(exported[-1]), [(data / day_name(day), 0.8), (data / day_name(day + 1), 0.2)])
    train_days.append(day)
    spec = TrainSpec(data, train_days, day + 1, experiment=experiment, mode="full", device="cpu", seed=seed)
    return train_candidate(spec, ModelRepository(work / "repo")).staged / ONNX_FILE


def _auc(label: NDArray[Any], scores: NDArray[Any]) -> float | None:
    if label.size == 0 or label.min() == label.max():
        return None
    return round(roc_auc(label, scores), 4)


def _logloss(label: NDArray[Any], scores: NDArray[Any]) -> float | None:
    return round(log_loss(label, scores), 5) if label.size else None


def recovery_share(served: float | None, drifted: float | None, counterfactual: float | None) -> float | None:
    """(served − drifted) / (counterfactual − drifted), rounded to 3 places; ``None`` when a value
    is missing or the counterfactual is no better than the drifted model (for log loss pass the
    negated values: lower is better)."""
    if served is None or drifted is None or counterfactual is None or counterfactual <= drifted:
        return None
    return round((served - drifted) / (counterfactual - drifted), 3)


@dataclass(frozen=True)
class _Ranked:
    """One scorer's rows in score order, for AUCs under many weightings: ``order`` (n,) sorts the
    rows by score, ``group`` (n,) numbers their tie groups in that order, ``positive`` (n,) their
    labels as bool."""

    order: NDArray[Any]
    group: NDArray[Any]
    positive: NDArray[Any]

    @classmethod
    def of(cls, label: NDArray[Any], scores: NDArray[Any]) -> _Ranked:
        order = np.argsort(scores, kind="mergesort")
        ranked = scores[order]
        group = np.concatenate(([0], np.cumsum(ranked[1:] != ranked[:-1])))
        return cls(order, group, label[order].astype(bool))

    def auc(self, weights: NDArray[Any]) -> float:
        """The weighted AUC (see ``weighted_auc``) for ``weights`` (n,) in the rows' own order."""
        w = weights[self.order].astype(np.float64)
        pos = np.bincount(self.group, np.where(self.positive, w, 0.0))
        neg = np.bincount(self.group, np.where(self.positive, 0.0, w))
        below = np.cumsum(neg) - neg  # negative weight scored strictly lower than each group
        total = pos.sum() * neg.sum()
        return float(np.sum(pos * (below + 0.5 * neg)) / total) if total > 0 else float("nan")


def weighted_auc(label: NDArray[Any], scores: NDArray[Any], weights: NDArray[Any]) -> float:
    """AUC (Mann-Whitney, ties counted half) with a weight per row: row ``i`` counts
    ``weights[i]`` times. Unit weights give ``roc_auc``; Poisson(1) weights give one bootstrap
    resample. ``label``, ``scores``, ``weights``: (n,), n ≥ 1; ``nan`` when a class has no weight.

    >>> y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.4, 0.9])
    >>> weighted_auc(y, s, np.ones(4)), roc_auc(y, s)
    (0.875, 0.875)
    >>> weighted_auc(y, s, np.array([1.0, 1.0, 0.0, 1.0]))  # the tied negative left out
    1.0
    """
    return _Ranked.of(label, scores).auc(weights)


def recovery_interval(
    label: NDArray[Any],
    served: NDArray[Any],
    drifted: NDArray[Any],
    counterfactual: NDArray[Any],
    resamples: int = 200,
    seed: int = 0,
) -> list[float] | None:
    """95 % paired bootstrap interval ``[low, high]`` of the AUC recovery share
    ``(served − drifted) / (counterfactual − drifted)`` over impressions (label and the three
    scorers' scores, each (n,)): every resample weighs the impressions alike for all three
    (Poisson(1) weights), so what the scorers share cancels. ``None`` when the gap itself is not
    established — its own 95 % interval reaches 0 (more than 2.5 % of resamples show the
    counterfactual no better than the drifted model, or no AUC): a share over a gap that may be 0
    is not defined well enough to bound. The resamples without a gap (at most 2.5 %) are left out
    of the share's percentiles. It covers the evaluation's sampling noise only, not a retrain's own
    randomness, and treats impressions as independent (those of one request are not quite).
    """
    rng = np.random.default_rng(seed)
    scorers = [_Ranked.of(label, x) for x in (served, drifted, counterfactual)]  # sorted once, not per resample
    aucs = np.array([[r.auc(w) for r in scorers] for w in (rng.poisson(1.0, label.size) for _ in range(resamples))])
    s, d, c = aucs.T
    with np.errstate(invalid="ignore"):
        gapped = c - d > 0  # False where an AUC is nan
    if gapped.mean() < 0.975:
        return None
    low, high = np.percentile((s[gapped] - d[gapped]) / (c[gapped] - d[gapped]), [2.5, 97.5])
    return [round(float(low), 3), round(float(high), 3)]


def over_seeds(served: float | None, drifted: float | None, aucs: list[float]) -> dict[str, Any]:
    """One yardstick trained with several seeds: its AUCs on the recovery window (``aucs``, the
    experiment's own seed first), their mean and sample standard deviation, and the served model's
    AUC recovery share against the mean (``recovery_share``). A single counterfactual is one draw
    of a randomly initialised model; the mean estimates what a full retrain reaches in
    expectation, and the spread says how far one draw may stray from it.

    >>> over_seeds(0.70, 0.66, [0.72, 0.70, 0.71])
    {'aucs': [0.72, 0.7, 0.71], 'mean': 0.71, 'sd': 0.01, 'auc_recovery': 0.8}
    """
    if not aucs:
        raise ValueError("over_seeds needs at least one AUC")
    mean = round(float(np.mean(aucs)), 4)
    sd = round(float(np.std(aucs, ddof=1)), 4) if len(aucs) > 1 else None
    return {"aucs": list(aucs), "mean": mean, "sd": sd, "auc_recovery": recovery_share(served, drifted, mean)}


def scores_of(
    shown: Shown, drifted: NDArray[Any], counterfactuals: dict[str, NDArray[Any] | None]
) -> dict[str, NDArray[Any]]:
    """The scorers compared on the shown impressions, by name (a counterfactual that was not
    trained is left out)."""
    out = {"oracle": shown.p_true, "served": shown.pctr, "drifted": drifted}
    return out | {name: s for name, s in counterfactuals.items() if s is not None}


def window_aucs(shown: Shown, scores: dict[str, NDArray[Any]], start: datetime, end: datetime) -> dict[str, Any]:
    """AUC of each scorer on the impressions shown in one monitor window, and their count."""
    mask = shown.between(start, end)
    label = shown.label[mask]
    return {"impressions": int(mask.sum())} | {name: _auc(label, s[mask]) for name, s in scores.items()}


def recovery(
    shown: Shown, scores: dict[str, NDArray[Any]], since: datetime, ceiling: str = "counterfactual_24h"
) -> dict[str, Any]:
    """AUC and log loss of each scorer on the impressions shown from ``since`` on, and the
    served model's recovery share of the drifted-to-``ceiling`` gap for both."""
    mask = shown.at_us >= to_us(since)
    label = shown.label[mask]
    auc = {name: _auc(label, s[mask]) for name, s in scores.items()}
    loss = {name: _logloss(label, s[mask]) for name, s in scores.items() if name != "oracle"}
    neg = {k: None if v is None else -v for k, v in loss.items()}
    full = [v for k in (ceiling, f"{ceiling}_recent") if (v := auc.get(k)) is not None]
    return {
        "from": since.isoformat(),
        "impressions": int(mask.sum()),
        "ceiling": ceiling,
        "auc": auc,
        "logloss": loss,
        "auc_recovery": recovery_share(auc["served"], auc["drifted"], auc.get(ceiling)),
        "auc_recovery_best": recovery_share(auc["served"], auc["drifted"], max(full)) if full else None,
        "logloss_recovery": recovery_share(neg["served"], neg["drifted"], neg.get(ceiling)),
        "auc_recovery_interval": {
            name: recovery_interval(label, scores["served"][mask], scores["drifted"][mask], scores[name][mask])
            for name in ("counterfactual", ceiling)
            if name in scores and label.size and label.min() != label.max()
        },
    }


def new_ads_calibration(
    shown: Shown,
    new: NDArray[Any],
    onset: datetime,
    windows: list[tuple[datetime, datetime, datetime]],
    tolerance: float = 0.10,
    min_impressions: int = 50,
) -> dict[str, Any]:
    """How well the served pCTR of new ads matched the truth, window by window.

    ``new``: ``(n,)`` bool, the shown impressions carrying a new ad; ``windows``: (as of, start,
    end) of each monitor window. Per window from the onset on: new-ad impressions, and the
    ratio Σ served pCTR / Σ true probability (``None`` under ``min_impressions``).
    ``calibrated_at``: the first window from which every later measured ratio lies within
    1 ± ``tolerance`` (``None`` if the last one does not); ``hours_to_calibrated`` counts from the
    onset. ``ctr``: observed and expected (mean true probability) CTR of all impressions shown
    from the onset on — what a policy's choices earn.

    >>> from datetime import UTC
    >>> t = datetime(2026, 1, 5, tzinfo=UTC)
    >>> n = 4
    >>> s = Shown(np.array([to_us(t)] * n), np.zeros((n, 13), np.float32), np.zeros((n, 26), np.int64),
    ...           np.full(n, 0.2), np.full(n, 0.21, np.float32), np.ones(n, np.int64), np.zeros(n, np.int8))
    >>> new_ads_calibration(s, np.ones(n, bool), t, [(t, t, t)], min_impressions=1)["calibrated_at"]
    '2026-01-05T00:00:00+00:00'
    """
    after = shown.at_us >= to_us(onset)
    series: list[dict[str, Any]] = []
    for as_of, start, end in windows:
        if as_of < onset:
            continue
        mask = shown.between(start, end) & new
        count = int(mask.sum())
        truth = float(shown.p_true[mask].sum())
        ratio = round(float(shown.pctr[mask].sum()) / truth, 4) if count >= min_impressions and truth > 0 else None
        series.append({"as_of": as_of.isoformat(), "impressions": count, "pctr_over_truth": ratio})
    measured = [e for e in series if e["pctr_over_truth"] is not None]
    calibrated_at: str | None = None
    for e in reversed(measured):
        if abs(e["pctr_over_truth"] - 1.0) > tolerance:
            break
        calibrated_at = e["as_of"]
    hours = None if calibrated_at is None else (datetime.fromisoformat(calibrated_at) - onset).total_seconds() / 3600
    return {
        "tolerance": tolerance,
        "series": series,
        "calibrated_at": calibrated_at,
        "hours_to_calibrated": hours,
        "new_ad_share": round(float(new[after].mean()), 4) if after.any() else None,
        "ctr": {
            "impressions": int(after.sum()),
            "observed": round(float(shown.label[after].mean()), 5) if after.any() else None,
            "expected": round(float(shown.p_true[after].mean()), 5) if after.any() else None,
        },
    }
