"""``ctr demo``: the closed loop on one machine — drift detected, one retrain, recovery.

1. Generate days with drift switched on at ``drift_day`` (``ctr synth``).
2. Run the pipeline in ``full`` mode locally → version 1.
3. Start Triton and the score API (SQLite event log).
4. Play the ad server and its users on a simulated clock: every tick, score requests with
   candidate sets from the generator of the current simulated day; the top ads are shown;
   clicks are drawn from the planted true probabilities and posted after a random delay.
5. Every ``monitor_every`` of simulated time run the monitor (the CronJob's code) with the
   local trigger: when the windowed AUC falls below the threshold it starts the incremental
   pipeline once; the gate publishes version 2; Triton swaps; AUC recovers.

Writes ``report_dir/``: ``auc.png``, ``index.html`` (plot, decision records, drift report)
and ``summary.json``. Triton, the API and any pipeline run it started are stopped on exit,
Ctrl-C or failure.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from ctr.data.synth import SynthArgs, synthesize
from ctr.data.world import Drift, Impressions, SyntheticWorld
from ctr.errors import CtrError
from ctr.events.store import EventStore
from ctr.paths import output_dir
from ctr.repository import ModelRepository
from ctr.retrain_request import ATTRIBUTION, RetrainRequest, event_window_since
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS
from ctr.serving.local import LocalStack
from monitor.rules import Rules
from monitor.run import MonitorRequest, run_monitor
from pipelines.runner import run_local

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _candidates(imp: Impressions, rows: NDArray[Any]) -> list[dict[str, Any]]:
    out = []
    for r in rows.tolist():
        features: dict[str, Any] = {
            c: int(imp.dense[r, i]) for i, c in enumerate(DENSE_COLUMNS) if not imp.dense_missing[r, i]
        }
        features |= {c: f"{int(imp.sparse[r, j]):08x}" for j, c in enumerate(SPARSE_COLUMNS) if imp.sparse[r, j] >= 0}
        out.append({"ad_id": f"ad-{r}", "features": features})
    return out


class TrafficSimulator:
    """The ad server and its users: score requests now, clicks later, on simulated time."""

    def __init__(self, cfg: DemoConfig, world: SyntheticWorld, api_url: str, timeline: Timeline) -> None:
        self.cfg, self.world, self.timeline = cfg, world, timeline
        self.client = httpx.Client(base_url=api_url, timeout=10)
        self.pending_clicks: list[tuple[datetime, str]] = []
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.pool = ThreadPoolExecutor(cfg.clients)

    def _one_request(self, at: datetime, imp: Impressions, rows: NDArray[Any]) -> list[tuple[str, float]]:
        body = {"event_time": at.isoformat(), "candidates": _candidates(imp, rows), "top_k": self.cfg.top_k}
        answer = self.client.post("/v1/score", json=body)
        if answer.status_code != 200:
            self.timeline.requests_failed += 1
            return []
        return [(r["impression_id"], float(imp.p_true[int(r["ad_id"][3:])])) for r in answer.json()["results"]]

    def tick(self, start: datetime) -> None:
        """Send one tick of score requests and post the clicks whose time has come."""
        day = int((start - EPOCH) / timedelta(days=1))
        n = self.cfg.requests_per_tick * self.cfg.candidates
        imp = self.world.sample(day, n, self.rng)
        offsets = np.sort(self.rng.uniform(0, self.cfg.tick.total_seconds(), self.cfg.requests_per_tick))
        jobs = [
            self.pool.submit(
                self._one_request,
                start + timedelta(seconds=float(o)),
                imp,
                np.arange(k * self.cfg.candidates, (k + 1) * self.cfg.candidates),
            )
            for k, o in enumerate(offsets)
        ]
        for job, offset in zip(jobs, offsets, strict=True):
            shown = job.result()
            self.timeline.impressions_sent += len(shown)
            for impression_id, p_true in shown:
                if self.rng.random() < p_true:
                    delay = timedelta(minutes=float(self.rng.exponential(6.0)))
                    self.pending_clicks.append((start + timedelta(seconds=float(offset)) + delay, impression_id))
        self.post_due_clicks(start + self.cfg.tick)

    def post_due_clicks(self, now: datetime) -> None:
        due = sorted((c for c in self.pending_clicks if c[0] <= now), key=lambda c: c[0])
        self.pending_clicks = [c for c in self.pending_clicks if c[0] > now]
        for at, impression_id in due:
            self.client.post("/v1/clicks", json={"impression_ids": [impression_id], "clicked_at": at.isoformat()})

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()


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
        api_port=_free_port(),
        grpc_port=_free_port(),
        http_port=_free_port(),
        metrics_port=_free_port(),
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
                    print(f"{_fmt(now)}  Triton now serves version {served}")
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
                    print(_line(now, record))
            sim.post_due_clicks(now + timedelta(days=1))
        finally:
            sim.close()
        _wait_for_pipeline(repo, Path(target.work_dir) / "logs", timeout=600)
        summary = _summary(cfg, repo, store, timeline, start)
        _write_report(cfg, timeline, summary)
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


class DemoError(CtrError):
    """The demo could not complete."""


def _fmt(t: datetime) -> str:
    return f"day {(t - EPOCH).days} {t:%H:%M}"


def _line(t: datetime, r: dict[str, Any]) -> str:
    auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f} [{r['auc_lower']:.3f}, {r['auc_upper']:.3f}]"
    run = f" run {r['run_id']}" if r.get("run_id") else ""
    return f"{_fmt(t):<17} {('v' + str(r['serving_version'])):>6} {r['labelled']:>8}  {auc:<24} {r['decision']}{run}"


def _mean_auc(entries: list[dict[str, Any]]) -> float | None:
    values = [e["auc"] for e in entries if e["auc"] is not None]
    return round(float(np.mean(values)), 4) if values else None


def _summary(
    cfg: DemoConfig, repo: ModelRepository, store: EventStore, timeline: Timeline, start: datetime
) -> dict[str, Any]:
    drift_at = EPOCH + timedelta(days=cfg.drift_day)
    swap_at = datetime.fromisoformat(timeline.swaps[0]["at"]) if timeline.swaps else None

    def window_start(e: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(e["window_start"])

    def window_end(e: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(e["window_end"])

    before = [e for e in timeline.entries if window_end(e) <= drift_at]
    between = [
        e for e in timeline.entries if window_start(e) >= drift_at and (swap_at is None or window_end(e) <= swap_at)
    ]
    after = [e for e in timeline.entries if swap_at is not None and window_start(e) >= swap_at]
    triggers = [e for e in timeline.entries if e["decision"] == "trigger" and e["submission"] == "ok"]
    detected = [e for e in timeline.entries if e["decision"] in ("trigger", "in-flight", "cooldown")]
    versions = [
        {"version": v, "parent_version": repo.metadata(v)["parent_version"], "mode": repo.metadata(v)["mode"]}
        for v in repo.versions()
    ]
    return {
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "drift_onset": drift_at.isoformat(),
        "baseline_auc": timeline.baseline.get("auc"),
        "threshold": timeline.baseline.get("threshold"),
        "first_detection": detected[0]["as_of"] if detected else None,
        "triggers": len(triggers),
        "versions": versions,
        "swaps": timeline.swaps,
        "auc_before_drift": _mean_auc(before),
        "auc_after_drift": _mean_auc(between),
        "auc_after_swap": _mean_auc(after),
        "impressions_sent": timeline.impressions_sent,
        "impressions_logged": store.count_impressions(),
        "requests_failed": timeline.requests_failed,
        "simulated_from": start.isoformat(),
    }


def hours(iso: str) -> float:
    """Simulated days since the demo's epoch (fractional) of an ISO time."""
    return (datetime.fromisoformat(iso) - EPOCH).total_seconds() / 86400


def _write_report(cfg: DemoConfig, timeline: Timeline, summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in timeline.entries if e["auc"] is not None]
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    if entries:
        x = [hours(e["as_of"]) for e in entries]
        ax.plot(x, [e["auc"] for e in entries], "o-", color="tab:blue", label="windowed AUC (served impressions)")
        ax.fill_between(
            x,
            [e["auc_lower"] for e in entries],
            [e["auc_upper"] for e in entries],
            color="tab:blue",
            alpha=0.2,
            label="95% DeLong interval",
        )
    if timeline.baseline:
        ax.axhline(
            timeline.baseline["threshold"],
            color="tab:red",
            linestyle="--",
            label=f"threshold {timeline.baseline['threshold']}",
        )
    ax.axvline(cfg.drift_day, color="tab:orange", label=f"{cfg.drift} drift onset")
    for e in timeline.entries:
        if e["decision"] == "trigger" and e["submission"] == "ok":
            ax.axvline(hours(e["as_of"]), color="tab:purple", linestyle=":", label="retraining triggered")
    for s in timeline.swaps:
        ax.axvline(hours(s["at"]), color="tab:green", linestyle="-.", label=f"version {s['version']} served")
    ax.set_xlabel("simulated day")
    ax.set_ylabel("AUC-ROC")
    ax.set_title("ctr-loop demo: drift, one retrain, recovery")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(cfg.report_dir / "auc.png")
    plt.close(fig)
    (cfg.report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = "\n".join(_row(e) for e in timeline.entries)
    drift = (
        '<p><a href="drift/drift.html">Evidently drift report (last monitor run)</a></p>'
        if (cfg.report_dir / "drift" / "drift.html").exists()
        else "<p>No drift report was produced.</p>"
    )
    (cfg.report_dir / "index.html").write_text(f"""<!doctype html><html><head><meta charset="utf-8">
<title>ctr-loop demo report</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}</style></head><body>
<h1>ctr-loop demo</h1><img src="auc.png" alt="windowed AUC over simulated time">
<h2>Summary</h2><pre>{json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2)}</pre>
<h2>Drift</h2>{drift}
<h2>Monitor decision records</h2><table><tr><th>as of</th><th>served</th><th>labelled</th><th>AUC</th>
<th>95% CI</th><th>drift share</th><th>decision</th><th>reason</th></tr>{rows}</table></body></html>""")


def _row(e: dict[str, Any]) -> str:
    auc = "" if e["auc"] is None else f"{e['auc']:.4f}"
    interval = "" if e["auc"] is None else f"[{e['auc_lower']:.4f}, {e['auc_upper']:.4f}]"
    drift = "" if e["drift_share"] is None else f"{e['drift_share']:.2f}"
    cells = [
        e["as_of"],
        f"v{e['serving_version']}",
        str(e["labelled"]),
        auc,
        interval,
        drift,
        e["decision"],
        e["reason"],
    ]
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
