"""Monitor rules as data (a YAML file), Evidently-preset style: thresholds are configuration.

Every key (``monitor/rules.example.yaml`` ships these without ``relative_drop``)::

    attribution_window: 1h      # optional; an impression is labelled once this has passed
    window:
      max_age: 6h               # only impressions served in the last 6 h ...
      max_labelled: 50000       # ... and at most the newest 50k of them
    evidence:
      min_positives: 100
      min_negatives: 100
      confidence: 0.95          # DeLong interval
      consecutive_breaches: 1   # runs in a row whose interval lies below the threshold
    auc:
      absolute: 0.70            # breach when the upper bound < 0.70 ...
      relative_drop: 0.03       # ... or < validation AUC - 0.03 (offline: not comparable) ...
      baseline: learned         # ... or < the learned windowed AUC of the version that set the bar - margin
      margin: 0.02
      baseline_windows: 3       # learned as the median of the version's first 3 windows of its own
    calibration:
      max_deviation: 0.15       # breach when predicted/observed clicks lie outside 1 ± 0.15 ...
      baseline: learned         # ... or outside the serving lineage's own level × (1 ± margin)
      margin: 0.04              # (learned like the AUC's: median of auc.baseline_windows own windows)
    cooldown: 6h                # no second trigger (or alert) within this
    retrain:
      escalate: true            # a breach outliving an incremental retrain asks for a full one
      max_per_episode: 2        # triggers per breach episode; then the monitor pages a person
      challenge: true           # a triggered incremental run also trains from scratch; validation picks
      follow_up: 18h            # one more full retrain this long after an episode's breach began,
                                # on the traffic since (within max_per_episode); absent: none
    lease_ttl: 10m              # a crashed monitor run's lease expires after this
    drift:
      enabled: true
      sample_rows: 5000
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from ctr.errors import InputError
from ctr.retrain_request import ATTRIBUTION, ATTRIBUTION_WINDOW
from ctr.timeutil import parse_duration

SHIPPED = Path(__file__).parent / "rules.example.yaml"  # the rules the CronJob ships with


@dataclass(frozen=True)
class Rules:
    attribution_window: timedelta = ATTRIBUTION
    max_age: timedelta = timedelta(hours=6)
    max_labelled: int = 50_000
    min_positives: int = 100
    min_negatives: int = 100
    confidence: float = 0.95
    consecutive_breaches: int = 1
    absolute_auc: float | None = 0.70
    relative_drop: float | None = None
    learned_baseline: bool = False  # auc.baseline: learned
    baseline_margin: float = 0.02  # auc.margin
    baseline_windows: int = 3  # auc.baseline_windows: the learned baseline is the median of this many own windows
    calibration_max_deviation: float | None = None  # calibration.max_deviation; None: not a signal
    calibration_learned: bool = False  # calibration.baseline: learned
    calibration_margin: float = 0.04  # calibration.margin, relative to the learned level
    cooldown: timedelta = timedelta(hours=6)
    escalate: bool = True  # retrain.escalate
    challenge: bool = False  # retrain.challenge: the triggered run's RetrainRequest.challenge
    max_per_episode: int | None = None  # retrain.max_per_episode; None: no limit
    follow_up: timedelta | None = None  # retrain.follow_up; None: no follow-up retrain
    lease_ttl: timedelta = timedelta(minutes=10)
    drift_enabled: bool = True
    drift_sample_rows: int = 5_000

    def with_overrides(self, threshold: float | None = None, attribution_window: str | None = None) -> Rules:
        """These rules with the command line's ``--threshold`` (an AUC in (0, 1]) and
        ``--attribution-window`` (a duration, shorter than ``max_age``); ``InputError`` naming
        the flag for a value out of range."""
        rules = self
        if threshold is not None:
            if not 0.0 < threshold <= 1.0:  # nan fails every comparison
                raise InputError(f"--threshold must lie in (0, 1], got {threshold}")
            rules = replace(rules, absolute_auc=threshold)
        if attribution_window is not None:
            rules = replace(rules, attribution_window=parse_duration(attribution_window, "--attribution-window"))
            if rules.attribution_window >= rules.max_age:
                raise InputError(
                    f"--attribution-window must be shorter than the rules' window.max_age ({rules.max_age}), "
                    f"got {attribution_window!r}"
                )
        return rules


#: The file's layout: top-level keys, and for each block the keys it holds.
LAYOUT: dict[str, frozenset[str] | None] = {
    "attribution_window": None,
    "window": frozenset({"max_age", "max_labelled"}),
    "evidence": frozenset({"min_positives", "min_negatives", "confidence", "consecutive_breaches"}),
    "auc": frozenset({"absolute", "relative_drop", "baseline", "margin", "baseline_windows"}),
    "calibration": frozenset({"max_deviation", "baseline", "margin"}),
    "cooldown": None,
    "retrain": frozenset({"escalate", "max_per_episode", "challenge", "follow_up"}),
    "lease_ttl": None,
    "drift": frozenset({"enabled", "sample_rows"}),
}


def _check_layout(raw: Any, path: Path) -> None:
    """``InputError`` for a key the layout does not know: a misplaced rule must not fall back
    to its default in silence."""
    if not isinstance(raw, dict):
        raise InputError(f"rules file {path}: expected a mapping of rules, got {type(raw).__name__}")
    for key, value in raw.items():
        if key not in LAYOUT:
            home = [block for block, keys in LAYOUT.items() if keys and key in keys]
            hint = f"; it belongs under {home[0]}:" if home else f"; known: {', '.join(LAYOUT)}"
            raise InputError(f"rules file {path}: unknown key {key!r}{hint}")
        block = LAYOUT[key]
        if block is None or value is None:
            continue
        if not isinstance(value, dict):
            raise InputError(f"rules file {path}: {key} must be a mapping of {', '.join(sorted(block))}")
        for inner in value:
            if inner not in block:
                raise InputError(f"rules file {path}: unknown key {key}.{inner}; known: {', '.join(sorted(block))}")


def load_rules(path: Path | None) -> Rules:
    """Rules from a UTF-8 YAML file (missing keys keep their defaults); ``InputError`` if it
    cannot be read or is malformed, for a key outside ``LAYOUT``, or for a value out of range:
    AUCs in (0, 1], ``relative_drop`` in [0, 1), ``confidence`` in (0, 1), counts at least 1,
    durations more than 0 (``cooldown`` at least 0) and at most ``MAX_DURATION``, and
    ``max_age`` longer than ``attribution_window``."""
    if path is None:
        return Rules()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise InputError(f"rules file {path} not found") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"rules file {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except OSError as exc:  # a directory, no permission, ...
        raise InputError(f"rules file {path} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"rules file {path} is not valid YAML: {exc}") from exc
    _check_layout(raw, path)
    try:
        window, evidence, auc, drift, cal, retrain = (
            raw.get(k, {}) or {} for k in ("window", "evidence", "auc", "drift", "calibration", "retrain")
        )
        for section, block in (("auc", auc), ("calibration", cal)):
            if block.get("baseline") not in (None, "learned"):
                raise InputError(f"{section}.baseline must be learned (or absent), got {block.get('baseline')!r}")
        defaults = Rules()
        rules = Rules(
            attribution_window=parse_duration(
                str(raw.get("attribution_window", ATTRIBUTION_WINDOW)), "attribution_window"
            ),
            max_age=parse_duration(str(window.get("max_age", "6h")), "window.max_age"),
            max_labelled=int(window.get("max_labelled", defaults.max_labelled)),
            min_positives=int(evidence.get("min_positives", defaults.min_positives)),
            min_negatives=int(evidence.get("min_negatives", defaults.min_negatives)),
            confidence=float(evidence.get("confidence", defaults.confidence)),
            consecutive_breaches=int(evidence.get("consecutive_breaches", defaults.consecutive_breaches)),
            absolute_auc=None if auc.get("absolute", 0.70) is None else float(auc.get("absolute", 0.70)),
            relative_drop=None if auc.get("relative_drop") is None else float(auc["relative_drop"]),
            learned_baseline=auc.get("baseline") == "learned",
            baseline_margin=float(auc.get("margin", defaults.baseline_margin)),
            baseline_windows=int(auc.get("baseline_windows", defaults.baseline_windows)),
            calibration_max_deviation=None if cal.get("max_deviation") is None else float(cal["max_deviation"]),
            calibration_learned=cal.get("baseline") == "learned",
            calibration_margin=float(cal.get("margin", defaults.calibration_margin)),
            cooldown=parse_duration(str(raw.get("cooldown", "6h")), "cooldown", allow_zero=True),
            escalate=retrain.get("escalate", defaults.escalate),
            challenge=retrain.get("challenge", defaults.challenge),
            max_per_episode=None if retrain.get("max_per_episode") is None else int(retrain["max_per_episode"]),
            follow_up=None
            if retrain.get("follow_up") is None
            else parse_duration(str(retrain["follow_up"]), "retrain.follow_up"),
            lease_ttl=parse_duration(str(raw.get("lease_ttl", "10m")), "lease_ttl"),
            drift_enabled=drift.get("enabled", True),
            drift_sample_rows=int(drift.get("sample_rows", defaults.drift_sample_rows)),
        )
    except (InputError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"rules file {path}: {exc}") from exc
    if rules.absolute_auc is None and rules.relative_drop is None and not rules.learned_baseline:
        raise InputError(f"rules file {path}: set auc.absolute, auc.relative_drop and/or auc.baseline: learned")
    if not 0.0 <= rules.baseline_margin < 1.0:
        raise InputError(f"rules file {path}: auc.margin must lie in [0, 1), got {rules.baseline_margin}")
    d = rules.calibration_max_deviation
    if d is not None and not 0.0 < d < 1.0:
        raise InputError(f"rules file {path}: calibration.max_deviation must lie in (0, 1), got {d}")
    if not 0.0 < rules.calibration_margin < 1.0:
        raise InputError(f"rules file {path}: calibration.margin must lie in (0, 1), got {rules.calibration_margin}")
    counts = (
        rules.consecutive_breaches,
        rules.min_positives,
        rules.min_negatives,
        rules.max_labelled,
        rules.baseline_windows,
    )
    cap = rules.max_per_episode
    if min(counts) < 1 or rules.drift_sample_rows < 1 or (cap is not None and cap < 1):
        raise InputError(f"rules file {path}: counts must be at least 1")
    if rules.absolute_auc is not None and not 0.0 < rules.absolute_auc <= 1.0:  # nan fails every comparison
        raise InputError(f"rules file {path}: auc.absolute must lie in (0, 1], got {rules.absolute_auc}")
    if rules.relative_drop is not None and not 0.0 <= rules.relative_drop < 1.0:
        raise InputError(f"rules file {path}: auc.relative_drop must lie in [0, 1), got {rules.relative_drop}")
    if rules.max_age <= rules.attribution_window:
        raise InputError(
            f"rules file {path}: window.max_age ({rules.max_age}) must be longer than "
            f"attribution_window ({rules.attribution_window}), or no impression is ever labelled"
        )
    if not 0.0 < rules.confidence < 1.0:
        raise InputError(f"rules file {path}: evidence.confidence must lie between 0 and 1, got {rules.confidence}")
    if rules.follow_up is not None and rules.follow_up <= rules.cooldown:
        raise InputError(
            f"rules file {path}: retrain.follow_up ({rules.follow_up}) must be longer than the cooldown "
            f"({rules.cooldown}): the cooldown after the episode's first trigger would hold it back anyway"
        )
    if not isinstance(rules.escalate, bool):
        raise InputError(f"rules file {path}: retrain.escalate must be true or false, got {rules.escalate!r}")
    if not isinstance(rules.challenge, bool):
        raise InputError(f"rules file {path}: retrain.challenge must be true or false, got {rules.challenge!r}")
    if not isinstance(rules.drift_enabled, bool):
        raise InputError(f"rules file {path}: drift.enabled must be true or false, got {rules.drift_enabled!r}")
    return rules
