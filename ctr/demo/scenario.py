"""The demo's scenario: its settings (``DemoConfig``), the simulated clock's epoch, and the
timeline the loop records (monitor decisions, version swaps, traffic counts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ctr.data.world import Drift
from ctr.errors import CtrError
from ctr.retrain_request import ATTRIBUTION

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # simulated day 0 starts here


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path = Path("demo-run")
    report_dir: Path = Path("demo-report")
    days: int = 7
    rows_per_day: int = 30_000
    drift_day: int = 4
    drift: Drift = "new-ads"
    seed: int = 7
    experiment: str = "dcn_v2_demo"
    threshold: float | None = None  # None: the warm-up day's baseline minus threshold_margin
    threshold_margin: float = 0.02
    db_url: str | None = None
    tick: timedelta = timedelta(minutes=30)
    requests_per_tick: int = 60
    candidates: int = 10
    top_k: int = 5
    monitor_every: timedelta = timedelta(hours=2)
    drift_every: int = 6
    window: timedelta = timedelta(hours=12)
    attribution_window: timedelta = ATTRIBUTION
    cooldown: timedelta = timedelta(days=3)
    keep_running: bool = False
    clients: int = 4


@dataclass
class Timeline:
    entries: list[dict[str, Any]] = field(default_factory=list)
    swaps: list[dict[str, Any]] = field(default_factory=list)
    impressions_sent: int = 0
    requests_failed: int = 0
    baseline: dict[str, float] = field(default_factory=dict)


class DemoError(CtrError):
    """The demo could not complete."""
