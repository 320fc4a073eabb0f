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
