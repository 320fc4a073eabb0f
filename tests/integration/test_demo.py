"""A shortened demo end to end: drift detected, exactly one retrain, recovery, nothing lost or left."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from ctr.demo import DemoConfig, run_demo

pytestmark = pytest.mark.slow


def tritonservers() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "tritonserver"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_shortened_demo(tmp_path: Path) -> None:
    before = tritonservers()
    cfg = DemoConfig(
        workdir=tmp_path / "run", report_dir=tmp_path / "report", days=6, rows_per_day=20_000, requests_per_tick=50
    )
    summary = run_demo(cfg)
    assert tritonservers() - before == set()  # no tritonserver (or stub) left behind
    assert summary == json.loads((tmp_path / "report" / "summary.json").read_text())
    assert (tmp_path / "report" / "auc.png").stat().st_size > 10_000
    assert "decision" in (tmp_path / "report" / "index.html").read_text()
    assert summary["first_detection"] is not None
    assert datetime.fromisoformat(summary["first_detection"]) > datetime.fromisoformat(summary["drift_onset"])
    assert summary["triggers"] == 1
    assert [(v["version"], v["parent_version"]) for v in summary["versions"]] == [(1, None), (2, 1)]
    assert summary["auc_after_swap"] > summary["auc_after_drift"]
    assert summary["impressions_sent"] == summary["impressions_logged"] > 0
    assert summary["requests_failed"] == 0
