"""``ctr demo``'s loop (``run_demo``): generate drifting days, train version 1, serve it, play the
traffic on a simulated clock and run the monitor every ``monitor_every``; the steps and what it
writes are in the package's docstring (``ctr.demo``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ctr.data.synth import SynthArgs, synthesize
from ctr.data.world import SyntheticWorld
from ctr.demo.report import decision_line, sim_time, summarize, write_report
from ctr.demo.scenario import EPOCH, DemoConfig, DemoError, Timeline
from ctr.demo.traffic import TrafficSimulator
from ctr.events.store import EventStore
from ctr.net import free_port
from ctr.paths import output_dir
from ctr.repository import ModelRepository
from ctr.retrain_request import RetrainRequest, event_window_since
from ctr.serving.local import LocalStack
from monitor.rules import Rules
from monitor.run import MonitorRequest, run_monitor
from pipelines.runner import run_local


@contextmanager
def _stop_triggered_runs(log_dir: Path) -> Iterator[None]:
    try:
        yield
    finally:
        for pid_file in log_dir.glob("*.pid") if log_dir.exists() else []:
            with suppress(ProcessLookupError, ValueError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def _wait_for_pipeline(repo: ModelRepository, log_dir: Path, timeout: float) -> None:
    """Wait until no triggered pipeline process is alive."""
    deadline = time.monotonic() + timeout
    pids = [int(p.read_text()) for p in log_dir.glob("*.pid")] if log_dir.exists() else []
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            with suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return
        time.sleep(1)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the loop end to end; returns the summary (also written to ``report_dir/summary.json``)."""
    shutil.rmtree(cfg.workdir, ignore_errors=True)
    shutil.rmtree(cfg.report_dir, ignore_errors=True)
    output_dir(cfg.workdir)
    output_dir(cfg.report_dir)
    data, repo = cfg.workdir / "data", ModelRepository(cfg.workdir / "repo")
    db_url = cfg.db_url or f"sqlite:///{(cfg.workdir / 'events.db').resolve()}"
    # History on disk stops before the drift; later days exist only as simulated traffic.
    args = SynthArgs(cfg.drift_day, cfg.rows_per_day, cfg.seed, drift_day=cfg.drift_day, drift=cfg.drift)
    print(
        f"[setup] generating history days 0-{cfg.drift_day - 1} x {cfg.rows_per_day} rows; "
        f"traffic to day {cfg.days} with {cfg.drift} drift from day {cfg.drift_day}"
    )
    synthesize(args, data)
    world = SyntheticWorld(args.world_config())
    holdout = cfg.drift_day - 1
    print(f"[setup] pipeline (full, local): train days 0-{holdout - 2}, valid {holdout - 1}, holdout {holdout}")
    first = run_local(
        RetrainRequest(
            repo=str(repo.root.resolve()),
            data_dir=str(data.resolve()),
            train_days=f"0-{holdout - 2}",
            valid_day=holdout - 1,
            holdout_day=holdout,
            work_dir=str((cfg.workdir / "pipeline").resolve()),
            mode="full",
            experiment=cfg.experiment,
        ),
        log_file=cfg.workdir / "logs" / "pipeline-full.log",
    )
    print(f"[setup] published version {first['version']} (holdout AUC {first['candidate_auc']})")
    store = EventStore(db_url)
    store.migrate()
    rules = Rules(
        attribution_window=cfg.attribution_window,
        max_age=cfg.window,
        max_labelled=100_000,
        min_positives=100,
        min_negatives=100,
        absolute_auc=cfg.threshold,
        cooldown=cfg.cooldown,
        lease_ttl=timedelta(minutes=5),
        drift_enabled=True,
        drift_sample_rows=2000,
    )
    target = RetrainRequest(
        repo=str(repo.root.resolve()),
        mode="incremental",
        data_dir=str(data.resolve()),
        work_dir=str((cfg.workdir / "pipeline").resolve()),
        experiment=cfg.experiment,
        events=True,
        since=event_window_since(cfg.window),
        attribution_window=f"{int(cfg.attribution_window.total_seconds())}s",
    )
    timeline = Timeline()
    stack = LocalStack(
        repo.root,
        db_url,
        api_port=free_port(),
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        poll_seconds=1.0,
        log_dir=cfg.workdir / "logs",
        spool_dir=cfg.workdir / "spool",
    )
    start, end = EPOCH + timedelta(days=holdout), EPOCH + timedelta(days=cfg.days)
    with _stop_triggered_runs(Path(target.work_dir) / "logs"), stack:
        print(f"[setup] Triton (gRPC :{stack.grpc_port}) and score API (http://127.0.0.1:{stack.api_port}) up")
        print(f"{'simulated time':<17} {'served':>6} {'labelled':>8}  {'AUC [95% CI]':<24} decision")
        sim = TrafficSimulator(cfg, world, f"http://127.0.0.1:{stack.api_port}", timeline)
        served = repo.served()
        now = start
        next_monitor = start + cfg.monitor_every
        monitor_runs = 0
        threshold = cfg.threshold
        if threshold is not None:
            timeline.baseline = {"threshold": threshold}
        warmup_end = EPOCH + timedelta(days=cfg.drift_day)  # the pre-drift traffic day
        try:
            while _keep_going(cfg, timeline, now, end):
                sim.tick(now)
                now += cfg.tick
                if repo.served() != served:
                    served = repo.served()
                    timeline.swaps.append({"at": now.isoformat(), "version": served})
                    print(f"{sim_time(now)}  Triton now serves version {served}")
                if now >= next_monitor:
                    next_monitor += cfg.monitor_every
                    monitor_runs += 1
                    if threshold is None and now >= warmup_end:
                        threshold = _baseline_threshold(cfg, timeline, start + cfg.window)
                    rules = replace(rules, absolute_auc=0.0 if threshold is None else threshold)
                    # Evidently's report takes seconds: the demo asks for one every drift_every runs
                    wants_drift = monitor_runs % cfg.drift_every == 0
                    record = run_monitor(
                        MonitorRequest(
                            db_url=db_url,
                            repo=repo.root,
                            rules=rules,
                            trigger="local",
                            as_of=now,
                            report_dir=cfg.report_dir / "drift" if wants_drift else None,
                            target=target,
                        )
                    )
                    timeline.entries.append(record)
                    print(decision_line(now, record))
            sim.post_due_clicks(now + timedelta(days=1))
        finally:
            sim.close()
        _wait_for_pipeline(repo, Path(target.work_dir) / "logs", timeout=600)
        summary = summarize(cfg, repo, store, timeline, start)
        write_report(cfg, timeline, summary)
        print(json.dumps(summary, indent=2))
        if cfg.keep_running:
            print(f"Triton and the API keep running (API http://127.0.0.1:{stack.api_port}); Ctrl-C stops them")
            stack.wait()
    return summary


def _keep_going(cfg: DemoConfig, timeline: Timeline, now: datetime, end: datetime) -> bool:
    """Simulate to ``end``; past it, only while a triggered retrain has not yet been served for
    one full monitor window (time keeps flowing while the pipeline runs), at most two days more."""
    if now < end:
        return True
    if now >= end + timedelta(days=2):
        return False
    triggered = any(e["decision"] == "trigger" and e["submission"] == "ok" for e in timeline.entries)
    if not triggered:
        return False
    if not timeline.swaps:
        return True
    swapped = datetime.fromisoformat(timeline.swaps[-1]["at"])
    return now < swapped + cfg.window + cfg.attribution_window + cfg.monitor_every


def _baseline_threshold(cfg: DemoConfig, timeline: Timeline, full_from: datetime) -> float:
    """The serving version's own windowed AUC on the warm-up day, minus the margin.

    Offline validation AUC is not comparable: the monitor sees only the ads that were shown
    (the top of each ranking), which lowers AUC. So the demo learns its baseline online."""
    aucs = [
        e["auc"] for e in timeline.entries if e["auc"] is not None and datetime.fromisoformat(e["as_of"]) >= full_from
    ]
    if not aucs:
        raise DemoError("no labelled window during the warm-up day; raise --requests-per-tick")
    baseline = float(np.mean(aucs))
    threshold = round(baseline - cfg.threshold_margin, 3)
    print(f"[baseline] version 1's windowed AUC on the warm-up day: {baseline:.3f}; threshold {threshold:.3f}")
    timeline.baseline = {"auc": round(baseline, 4), "threshold": threshold}
    return threshold
