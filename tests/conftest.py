"""Shared fixtures: small generated data sets, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctr.data.synth import SynthArgs, synthesize


@pytest.fixture(scope="session")
def small_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 days × 20k rows, seed 7, no drift."""
    out = tmp_path_factory.mktemp("small_days")
    synthesize(SynthArgs(days=3, rows_per_day=20_000, seed=7), out)
    return out


@pytest.fixture(scope="session")
def drift_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 days × 40k rows, seed 21, new-ads drift from day 4."""
    out = tmp_path_factory.mktemp("drift_days")
    synthesize(SynthArgs(days=6, rows_per_day=40_000, seed=21, drift_day=4, drift="new-ads"), out)
    return out
