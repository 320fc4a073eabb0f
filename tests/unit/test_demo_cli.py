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


def test_yardstick_seeds_reach_the_demo_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(ctr.demo, "run_demo", seen.append)
    monkeypatch.setattr(ctr.signals, "sigterm_as_interrupt", lambda: None)
    for flag, expected in (("3,5,8", (3, 5, 8)), ("none", ())):
        result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "w"), "--yardstick-seeds", flag])
        assert result.exit_code == 0, result.output
        assert seen[-1].yardstick_seeds == expected
    assert ctr.demo.DemoConfig().yardstick_seeds == (7, 11)  # the default: two more draws of each yardstick


@pytest.mark.parametrize("bad", ["7,x", "7,7", "-1", ""])
def test_bad_yardstick_seeds_stop_the_demo_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bad: str
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(ctr.demo, "run_demo", seen.append)
    monkeypatch.setattr(ctr.signals, "sigterm_as_interrupt", lambda: None)
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "w"), "--yardstick-seeds", bad])
    assert result.exit_code != 0
    assert "--yardstick-seeds" in str(result.exception)
    assert not seen and not (tmp_path / "w").exists()


def test_a_yardstick_seed_that_repeats_the_experiments_own_stops_the_demo(tmp_path: Path) -> None:
    from ctr.demo import DemoConfig, run_demo
    from ctr.errors import InputError

    cfg = DemoConfig(workdir=tmp_path / "w", report_dir=tmp_path / "r", yardstick_seeds=(7, 2024))
    with pytest.raises(InputError, match="own seed 2024"):  # dcn_v2_demo's seed: the same draw twice
        run_demo(cfg)
    assert not (tmp_path / "w").exists()  # before any work
