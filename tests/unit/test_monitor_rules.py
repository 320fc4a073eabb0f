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
        ("auc: 0.7\n", "auc must be a mapping of absolute, relative_drop"),
        ("evidence:\n  confidence: 95\n", "evidence.confidence must lie between 0 and 1, got 95.0"),
        ("evidence:\n  min_negatives: 0\n", "counts must be at least 1"),
        ("drift:\n  enabled: 'no'\n", "drift.enabled must be true or false, got 'no'"),
        ("auc:\n  absolute: null\n", "set auc.absolute and/or auc.relative_drop"),
        ("cooldown: soon\n", "bad duration 'soon'"),
    ],
)
def test_a_mistake_in_a_rules_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(message)):
        load_rules(path)
