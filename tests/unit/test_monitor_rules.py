"""Monitor rules files: the shipped ones load as documented; a mistake is named, never defaulted."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from ctr.errors import InputError
from monitor.rules import Rules, load_rules

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shipped", ["monitor/rules.example.yaml", "k8s/base/monitor-rules.yaml"])
def test_the_shipped_rules_files_load_as_written(shipped: str) -> None:
    rules = load_rules(ROOT / shipped)
    assert rules.attribution_window == timedelta(minutes=30) and rules.max_age == timedelta(hours=6)
    assert (rules.min_positives, rules.min_negatives, rules.confidence) == (100, 100, 0.95)
    assert rules.absolute_auc == 0.70 and rules.cooldown == timedelta(hours=6)
    assert rules.learned_baseline and rules.relative_drop is None and rules.escalate
    assert rules.calibration_max_deviation == 0.15 and rules.max_per_episode == 2 and rules.baseline_windows == 3
    assert rules.calibration_learned and rules.calibration_margin == 0.04
    assert rules.follow_up == timedelta(hours=18)
    assert rules == load_rules(ROOT / "monitor/rules.example.yaml")  # the cluster runs what the README shows


def test_a_partial_file_keeps_the_defaults_it_does_not_name(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("evidence:\n  min_positives: 20\nauc:\n  absolute: 0.65\n")
    rules = load_rules(path)
    assert (rules.min_positives, rules.absolute_auc) == (20, 0.65)
    assert rules.min_negatives == Rules().min_negatives and rules.cooldown == Rules().cooldown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_positives: 20\n", "unknown key 'min_positives'; it belongs under evidence:"),
        ("evidence:\n  min_positive: 20\n", "unknown key evidence.min_positive; known: confidence, consecutive_"),
        ("treshold: 0.7\n", "unknown key 'treshold'; known: attribution_window, window, evidence"),
        ("- 1\n- 2\n", "expected a mapping of rules, got list"),
        ("auc: 0.7\n", "auc must be a mapping of absolute, baseline, baseline_windows, margin, relative_drop"),
        ("evidence:\n  confidence: 95\n", "evidence.confidence must lie between 0 and 1, got 95.0"),
        ("evidence:\n  min_negatives: 0\n", "counts must be at least 1"),
        ("drift:\n  enabled: 'no'\n", "drift.enabled must be true or false, got 'no'"),
        ("retrain:\n  escalate: 1\n", "retrain.escalate must be true or false, got 1"),
        (
            "retrain:\n  full: true\n",
            "unknown key retrain.full; known: challenge, escalate, follow_up, max_per_episode",
        ),
        ("retrain:\n  follow_up: 6h\n", "retrain.follow_up (6:00:00) must be longer than the cooldown (6:00:00)"),
        ("retrain:\n  follow_up: soon\n", "bad retrain.follow_up 'soon': use forms like 30s"),
        ("retrain:\n  max_per_episode: 0\n", "counts must be at least 1"),
        ("auc:\n  baseline_windows: 0\n", "counts must be at least 1"),
        ("auc:\n  absolute: null\n", "set auc.absolute, auc.relative_drop and/or auc.baseline: learned"),
        ("cooldown: soon\n", "rules file {path}: bad cooldown 'soon': use forms like 30s"),
        ("auc:\n  absolute: 0\n", "auc.absolute must lie in (0, 1], got 0.0"),
        ("auc:\n  absolute: .nan\n", "auc.absolute must lie in (0, 1], got nan"),
        ("auc:\n  relative_drop: 1.5\n", "auc.relative_drop must lie in [0, 1), got 1.5"),
        ("calibration:\n  baseline: offline\n", "calibration.baseline must be learned (or absent), got 'offline'"),
        ("calibration:\n  margin: 0\n", "calibration.margin must lie in (0, 1), got 0.0"),
        ("calibration:\n  level: 1\n", "unknown key calibration.level; known: baseline, margin, max_deviation"),
        ("drift:\n  sample_rows: 0\n", "counts must be at least 1"),
        ("attribution_window: 366d\n", "attribution_window must be more than 0 and at most 365d, got '366d'"),
        ("window:\n  max_age: -1h\n", "bad window.max_age '-1h'"),
        ("cooldown: 400d\n", "cooldown must be at least 0 and at most 365d, got '400d'"),
        ("lease_ttl: 0.0001ms\n", "lease_ttl must be more than 0 and at most 365d, got '0.0001ms'"),
        ("attribution_window: 6h\n", "window.max_age (6:00:00) must be longer than attribution_window (6:00:00)"),
    ],
)
def test_a_mistake_in_a_rules_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(message.format(path=path))):
        load_rules(path)


def test_a_cooldown_of_zero_means_none(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("cooldown: 0s\n")
    assert load_rules(path).cooldown == timedelta(0)


@pytest.mark.parametrize(
    ("threshold", "window", "message"),
    [
        (float("nan"), None, "--threshold must lie in (0, 1], got nan"),
        (1.5, None, "--threshold must lie in (0, 1], got 1.5"),
        (None, "0s", "--attribution-window must be more than 0 and at most 365d, got '0s'"),
        (None, "7h", "--attribution-window must be shorter than the rules' window.max_age (6:00:00), got '7h'"),
    ],
)
def test_a_bad_command_line_override_names_its_flag(threshold: float | None, window: str | None, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        Rules().with_overrides(threshold, window)
    assert Rules().with_overrides(1.0, "5h") == Rules(absolute_auc=1.0, attribution_window=timedelta(hours=5))
