"""``ctr demo``'s options reach the demo's configuration, and bad ones stop it before any work."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ctr.demo
import ctr.signals
from ctr.cli import app


def test_export_window_reaches_the_demo_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(ctr.demo, "run_demo", seen.append)  # the demo itself is the integration suite's
    monkeypatch.setattr(ctr.signals, "sigterm_as_interrupt", lambda: None)  # keep pytest's own handler
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "w"), "--export-window", "6h"])
    assert result.exit_code == 0, result.output
    assert seen[0].export_window == timedelta(hours=6)


def test_a_bad_export_window_stops_the_demo_before_it_starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(ctr.demo, "run_demo", seen.append)
    monkeypatch.setattr(ctr.signals, "sigterm_as_interrupt", lambda: None)
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "w"), "--export-window", "0h"])
    assert result.exit_code != 0
    assert "--export-window" in str(result.exception)
    assert not seen and not (tmp_path / "w").exists()
