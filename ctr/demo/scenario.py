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
    rules_file: Path | None = None  # the monitor's rules; None: the shipped ones (monitor.rules.SHIPPED)
    db_url: str | None = None
    tick: timedelta = timedelta(minutes=30)
    requests_per_tick: int = 60
    candidates: int = 10
    top_k: int = 5
    monitor_every: timedelta = timedelta(hours=2)
    drift_every: int = 6
    export_window: timedelta = timedelta(hours=12)  # what each pipeline run exports and trains on: the last 12 h
    attribution_window: timedelta = ATTRIBUTION
    pipeline_latency: timedelta = timedelta(hours=2)  # simulated time a triggered run may take at most
    recovery_after: timedelta = timedelta(hours=24)  # recovery is measured from drift onset + this
    # the two recovery yardsticks are trained again with these seeds (beside the experiment's own):
    # one full retrain is one draw, and the recovery is also reported against the draws' mean
    yardstick_seeds: tuple[int, ...] = (7, 11)
    exploration: str = "none"  # the score API's policy (CTR_EXPLORATION): none or epsilon:E
    # scheduled incremental updates (what `ctr pipeline schedule` runs on Kubeflow), replayed here
    # every this much simulated time from the start of traffic; None: only the monitor's triggers
    update_every: timedelta | None = None
    keep_running: bool = False
    clients: int = 4


@dataclass
class Timeline:
    entries: list[dict[str, Any]] = field(default_factory=list)
    swaps: list[dict[str, Any]] = field(default_factory=list)
    impressions_sent: int = 0
    requests_failed: int = 0
    yardsticks: list[dict[str, Any]] = field(default_factory=list)  # per entry: oracle, drifted, counterfactual AUC
    updates: list[dict[str, Any]] = field(default_factory=list)  # scheduled updates: at, run_id or skipped


class DemoError(CtrError):
    """The demo could not complete."""
