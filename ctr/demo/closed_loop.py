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
from numpy.typing import NDArray

from ctr.data.synth import SynthArgs, synthesize
from ctr.data.world import SyntheticWorld
from ctr.demo.report import decision_line, sim_time, summarize, write_report
from ctr.demo.scenario import EPOCH, DemoConfig, Timeline
from ctr.demo.traffic import TrafficSimulator
from ctr.demo.yardsticks import (
    Shown,
    counterfactual_full,
    new_ads_calibration,
    over_seeds,
    recovery,
    score_graph,
    scores_of,
    window_aucs,
)
from ctr.events.store import EventStore
from ctr.metrics import roc_auc
from ctr.net import free_port
from ctr.paths import output_dir
from ctr.repository import ONNX_FILE, ModelRepository
from ctr.retrain_request import RetrainRequest, event_window_since
from ctr.serving.exploration import Exploration
from ctr.serving.local import LocalStack
from ctr.timeutil import to_us
from monitor.rules import SHIPPED, Rules, load_rules
from monitor.run import MonitorRequest, run_monitor
from monitor.triggers import local_run_state, start_local
from pipelines.runner import run_local


@contextmanager
def _stop_triggered_runs(log_dir: Path) -> Iterator[None]:
    try:
        yield
    finally:
        for pid_file in log_dir.glob("*.pid") if log_dir.exists() else []:
            with suppress(ProcessLookupError, ValueError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def _wait_for_pipeline(log_dir: Path, timeout: float) -> None:
    """Wait until no pipeline run started into ``log_dir`` is alive; past ``timeout`` seconds say so
    and go on (the run stays alive and is stopped on exit)."""
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
    print(f"[warn] a pipeline run is still running after {timeout:.0f} s; the simulated clock goes on")


def demo_rules(cfg: DemoConfig) -> Rules:
    """The monitor's rules for the demo: the shipped ones (or ``cfg.rules_file``) as they are,
    but for two settings of cost, not of decision: a drift report on 2,000 sampled rows (it takes
    seconds per run) and a 5-minute lease (a crashed demo does not block the next for 10)."""
    rules = load_rules(cfg.rules_file or SHIPPED)
    return replace(rules, drift_sample_rows=2000, lease_ttl=timedelta(minutes=5))


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the loop end to end; returns the summary (also written to ``report_dir/summary.json``)."""
    rules = demo_rules(cfg)  # a bad rules file fails before anything is generated
    Exploration.parse(cfg.exploration)  # so does a malformed policy
    yardstick_seed_check(cfg)  # and a yardstick seed that would repeat the experiment's draw
    cfg = replace(cfg, attribution_window=rules.attribution_window)  # one label rule: the monitor's
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
    target = RetrainRequest(
        repo=str(repo.root.resolve()),
        mode="incremental",
        data_dir=str(data.resolve()),
        work_dir=str((cfg.workdir / "pipeline").resolve()),
        experiment=cfg.experiment,
        events=True,
        since=event_window_since(cfg.export_window),
        attribution_window=f"{int(rules.attribution_window.total_seconds())}s",
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
        env={"CTR_EXPLORATION": cfg.exploration},
    )
    start, end = EPOCH + timedelta(days=holdout), EPOCH + timedelta(days=cfg.days)
    run_logs = Path(target.work_dir) / "logs"
    with _stop_triggered_runs(run_logs), stack:
        print(f"[setup] Triton (gRPC :{stack.grpc_port}) and score API (http://127.0.0.1:{stack.api_port}) up")
        print(f"{'simulated time':<17} {'served':>6} {'labelled':>8}  {'AUC [95% CI]':<24} decision")
        sim = TrafficSimulator(cfg, world, f"http://127.0.0.1:{stack.api_port}", timeline)
        served = repo.served()
        now = start
        next_monitor = start + cfg.monitor_every
        monitor_runs = 0
        run_due: datetime | None = None  # the started run (triggered or scheduled) must be done by then
        next_update = start + cfg.update_every if cfg.update_every else None
        update_running = False
        try:
            while _keep_going(cfg, rules, timeline, now, end):
                sim.tick(now)
                now += cfg.tick
                if repo.served() != served:
                    served = repo.served()
                    timeline.swaps.append({"at": now.isoformat(), "version": served})
                    print(f"{sim_time(now)}  Triton now serves version {served}")
                if now >= next_monitor:
                    next_monitor += cfg.monitor_every
                    if update_running:  # the monitor never races a scheduled run for the lease
                        _wait_for_pipeline(run_logs, timeout=900)
                        update_running = False
                    monitor_runs += 1
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
                    if record["decision"] == "trigger" and record["submission"] == "ok":
                        run_due = now + cfg.pipeline_latency
                if run_due is not None and now >= run_due:
                    _wait_for_pipeline(run_logs, timeout=900)  # the clock waits for the pipeline
                    run_due, update_running = None, False
                if next_update is not None and cfg.update_every is not None and now >= next_update:
                    while next_update <= now:
                        next_update += cfg.update_every
                    # one run at a time (a recurring run's max_concurrency 1), decided on the simulated
                    # clock: a run started less than pipeline_latency ago is in flight
                    if run_due is not None:
                        timeline.updates.append({"at": now.isoformat(), "skipped": "a run is in flight"})
                    else:
                        run_id = start_local(target, now, db_url, run_logs, source="scheduled")
                        timeline.updates.append({"at": now.isoformat(), "run_id": run_id})
                        print(f"{sim_time(now)}  scheduled incremental update {run_id} started")
                        update_running, run_due = True, now + cfg.pipeline_latency
            sim.post_due_clicks(now + timedelta(days=1))
        finally:
            sim.close()
        _wait_for_pipeline(run_logs, timeout=900)
        for update in timeline.updates:
            if "run_id" in update:
                update["state"] = local_run_state(run_logs, update["run_id"])
        shown = sim.shown.arrays()
        yardsticks = measure_yardsticks(cfg, repo, db_url, timeline, shown, start)
        yardsticks["exploration"] = {"policy": cfg.exploration} | new_ads_calibration(
            shown,
            world.shows_new_ad(shown.sparse),
            EPOCH + timedelta(days=cfg.drift_day),
            [_window(e) for e in timeline.entries],
        )
        summary = summarize(cfg, repo, store, timeline, start, yardsticks)
        write_report(cfg, timeline, summary)
        print(json.dumps(summary, indent=2))
        if cfg.keep_running:
            print(f"Triton and the API keep running (API http://127.0.0.1:{stack.api_port}); Ctrl-C stops them")
            stack.wait()
    return summary


def measure_yardsticks(
    cfg: DemoConfig, repo: ModelRepository, db_url: str, timeline: Timeline, shown: Shown, start: datetime
) -> dict[str, Any]:
    """Score the shown impressions offline with version 1 (the drifted model) and with two
    counterfactual full retrains (``ctr.demo.yardsticks``): up to the first trigger after the
    onset, and up to the start of the recovery window; fill ``timeline.yardsticks`` (one per
    monitor entry, a counterfactual only on impressions it did not train on) and return the
    recovery figures, measured from ``onset + recovery_after``."""
    onset = EPOCH + timedelta(days=cfg.drift_day)
    recovery_from = onset + cfg.recovery_after
    drifted = score_graph(repo.version_dir(1) / ONNX_FILE, shown)
    by_v1 = shown.version == 1
    mismatch = float(np.max(np.abs(drifted[by_v1] - shown.pctr[by_v1]))) if by_v1.any() else None
    first = next(
        (e for e in timeline.entries if _triggered(e) and datetime.fromisoformat(e["as_of"]) >= onset),
        None,
    )
    history = list(range(cfg.drift_day))
    cuts: dict[str, tuple[datetime, datetime, list[int]] | None] = {  # since, until, history days
        "counterfactual": None if first is None else (start, datetime.fromisoformat(first["as_of"]), history),
        "counterfactual_24h": (start, recovery_from, history),
        "counterfactual_24h_recent": (onset, recovery_from, []),
    }
    counterfactuals: dict[str, NDArray[Any] | None] = {}
    for name, cut in cuts.items():
        if cut is None:
            counterfactuals[name] = None
            continue
        since, until, days = cut
        what = f"days 0-{days[-1]} + " if days else ""
        print(f"[yardstick] {name}: full retrain on {what}events {sim_time(since)} to {sim_time(until)}")
        counterfactuals[name] = _yardstick_scores(cfg, db_url, cut, shown, cfg.workdir / name)
    scores = scores_of(shown, drifted, counterfactuals)
    result = recovery(shown, scores, recovery_from)
    result["over_seeds"] = _over_seeds(cfg, db_url, cuts, shown, scores, recovery_from)
    timeline.yardsticks = []
    for e in timeline.entries:
        begin = datetime.fromisoformat(e["window_start"])
        aucs = window_aucs(shown, scores, begin, datetime.fromisoformat(e["window_end"]))
        for name, cut in cuts.items():
            if cut is not None and begin < cut[1]:
                aucs[name] = None  # it trained on these impressions: no yardstick in sample
        timeline.yardsticks.append(aucs)
    return {
        "counterfactual_trained_to": {k: None if v is None else v[1].isoformat() for k, v in cuts.items()},
        "v1_offline_vs_served_max_abs": None if mismatch is None else round(mismatch, 7),
        "recovery": result,
    }


def yardstick_seed_check(cfg: DemoConfig) -> int:
    """The experiment's own training seed (the first draw of every yardstick); ``InputError`` when
    ``cfg.yardstick_seeds`` repeats it, which would train the same draw twice.

    >>> yardstick_seed_check(DemoConfig(yardstick_seeds=(7, 11)))
    2024
    """
    from ctr.config import load_experiment
    from ctr.errors import InputError

    own = load_experiment(cfg.experiment).seed
    if own in cfg.yardstick_seeds:
        raise InputError(f"--yardstick-seeds must not repeat the experiment {cfg.experiment}'s own seed {own}")
    return own


def _yardstick_scores(
    cfg: DemoConfig,
    db_url: str,
    cut: tuple[datetime, datetime, list[int]],
    shown: Shown,
    work: Path,
    seed: int | None = None,
) -> NDArray[Any]:
    """A counterfactual full retrain on ``cut`` (since, until, history days), trained in ``work``
    with the experiment's seed unless ``seed`` is given, scored on every shown impression (n,)."""
    since, until, days = cut
    graph = counterfactual_full(
        db_url, cfg.workdir / "data", days, since, until, cfg.experiment, work, cfg.attribution_window, seed=seed
    )
    return score_graph(graph, shown)


def _over_seeds(
    cfg: DemoConfig,
    db_url: str,
    cuts: dict[str, tuple[datetime, datetime, list[int]] | None],
    shown: Shown,
    scores: dict[str, NDArray[Any]],
    recovery_from: datetime,
) -> dict[str, Any]:
    """The two recovery yardsticks trained again with each of ``cfg.yardstick_seeds`` on the same
    data, and ``over_seeds`` of their AUCs on the recovery window, with ``seeds`` naming each draw's
    training seed (the experiment's own first)."""
    mask = shown.at_us >= to_us(recovery_from)
    label = shown.label[mask]
    if not cfg.yardstick_seeds or label.size == 0 or label.min() == label.max():
        return {}
    out: dict[str, Any] = {}
    for name in ("counterfactual", "counterfactual_24h"):
        cut = cuts.get(name)
        if cut is None or name not in scores:
            continue
        aucs = [roc_auc(label, scores[name][mask])]
        for seed in cfg.yardstick_seeds:
            print(f"[yardstick] {name}, seed {seed}: the same full retrain with another seed")
            drawn = _yardstick_scores(cfg, db_url, cut, shown, cfg.workdir / f"{name}-seed-{seed}", seed)
            aucs.append(roc_auc(label, drawn[mask]))
        served, drifted = roc_auc(label, scores["served"][mask]), roc_auc(label, scores["drifted"][mask])
        share = over_seeds(round(served, 4), round(drifted, 4), [round(a, 4) for a in aucs])
        out[name] = {"seeds": [yardstick_seed_check(cfg), *cfg.yardstick_seeds], **share}
    return out


def _window(e: dict[str, Any]) -> tuple[datetime, datetime, datetime]:
    """A monitor record's (as of, window start, window end)."""
    return tuple(datetime.fromisoformat(e[k]) for k in ("as_of", "window_start", "window_end"))  # type: ignore[return-value]  # three keys, three instants


def _triggered(e: dict[str, Any]) -> bool:
    return bool(e["decision"] == "trigger" and e["submission"] == "ok")


def _keep_going(cfg: DemoConfig, rules: Rules, timeline: Timeline, now: datetime, end: datetime) -> bool:
    """Simulate to ``end``; past it, only while the last retrain triggered before ``end`` has not yet
    been served for one full monitor window (time keeps flowing while the pipeline runs), at most
    two days more."""
    if now < end:
        return True
    if now >= end + timedelta(days=2):
        return False
    # only a trigger before the end extends the run: a storm must not hold it for two more days
    triggers = [t for e in timeline.entries if _triggered(e) and (t := datetime.fromisoformat(e["as_of"])) < end]
    if not triggers:
        return False
    swaps = [datetime.fromisoformat(s["at"]) for s in timeline.swaps if datetime.fromisoformat(s["at"]) > triggers[-1]]
    if not swaps:
        return True
    return now < swaps[-1] + rules.max_age + rules.attribution_window + cfg.monitor_every
