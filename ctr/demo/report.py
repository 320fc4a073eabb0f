"""The demo's report: ``summary.json``, ``auc.png`` and ``index.html`` (plot, decision
records, drift report)."""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ctr.demo.scenario import EPOCH, DemoConfig, Timeline
from ctr.events.store import EventStore
from ctr.repository import ModelRepository
from monitor.triggers import run_source


def sim_time(t: datetime) -> str:
    return f"day {(t - EPOCH).days} {t:%H:%M}"


def decision_line(t: datetime, r: dict[str, Any]) -> str:
    auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f} [{r['auc_lower']:.3f}, {r['auc_upper']:.3f}]"
    run = f" run {r['run_id']}" if r.get("run_id") else ""
    return (
        f"{sim_time(t):<17} {('v' + str(r['serving_version'])):>6} {r['labelled']:>8}  {auc:<24} {r['decision']}{run}"
    )


def _mean_auc(entries: list[dict[str, Any]]) -> float | None:
    values = [e["auc"] for e in entries if e["auc"] is not None]
    return round(float(np.mean(values)), 4) if values else None


def episode_triggers(entries: list[dict[str, Any]], since: datetime) -> list[int]:
    """Triggers per monitor episode from ``since`` on, in order, as the monitor counts them: an
    episode runs from its first trigger to the first *clear* window served by one version (no
    breach, every point estimate inside); a later trigger starts the next one, except a follow-up
    (``retrain.follow_up``), which counts in the episode it follows up."""
    counts: list[int] = []
    open_episode = False
    for e in entries:
        if datetime.fromisoformat(e["as_of"]) < since:
            continue
        if e["decision"] == "trigger" and e["submission"] == "ok":
            if e.get("follow_up"):
                # counted in the episode it follows up; one that began before ``since`` is not counted
                began = e.get("episode_since")
                if counts and (began is None or datetime.fromisoformat(began) >= since):
                    counts[-1] += 1
            else:
                if not open_episode:
                    counts.append(0)
                    open_episode = True
                counts[-1] += 1
        # a clear window served by one version ends the episode (a follow-up's window too)
        if open_episode and e.get("clear") and len(e.get("per_version") or {}) <= 1:
            open_episode = False
    return counts


def summarize(
    cfg: DemoConfig,
    repo: ModelRepository,
    store: EventStore,
    timeline: Timeline,
    start: datetime,
    yardsticks: dict[str, Any],
) -> dict[str, Any]:
    drift_at = EPOCH + timedelta(days=cfg.drift_day)
    swap_at = datetime.fromisoformat(timeline.swaps[0]["at"]) if timeline.swaps else None

    def window_start(e: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(e["window_start"])

    def window_end(e: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(e["window_end"])

    def after_onset(e: dict[str, Any]) -> bool:
        return datetime.fromisoformat(e["as_of"]) >= drift_at

    before = [e for e in timeline.entries if window_end(e) <= drift_at]
    between = [
        e for e in timeline.entries if window_start(e) >= drift_at and (swap_at is None or window_end(e) <= swap_at)
    ]
    after = [e for e in timeline.entries if swap_at is not None and window_start(e) >= swap_at]
    triggers = [e for e in timeline.entries if e["decision"] == "trigger" and e["submission"] == "ok"]
    # a breach seen (a follow-up, or a record that held one back, needs none)
    detected = [
        e
        for e in timeline.entries
        if e["decision"] in ("trigger", "in-flight", "settling", "cooldown", "exhausted") and e.get("breach", True)
    ]
    episodes = episode_triggers(timeline.entries, drift_at)
    baselines = {str(e["serving_version"]): e.get("learned_baseline") for e in timeline.entries}
    levels = {str(e["serving_version"]): e.get("learned_calibration") for e in timeline.entries}
    metadata = {v: repo.metadata(v) for v in repo.versions()}  # one read of each version's file
    versions = [
        {
            "version": v,
            "parent_version": m["parent_version"],
            "mode": m["mode"],
            # who asked for it, the run id's prefix: local (a run started by hand: the setup's),
            # monitor (a trigger) or scheduled (a periodic update)
            "source": run_source(str(m.get("pipeline", {}).get("run_id") or "unknown")),
        }
        for v, m in metadata.items()
    ]
    return {
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "drift_onset": drift_at.isoformat(),
        "learned_baselines": {v: b for v, b in baselines.items() if b is not None},
        "learned_calibrations": {v: b for v, b in levels.items() if b is not None},
        "first_detection": next((e["as_of"] for e in detected if after_onset(e)), None),
        "triggers": len(triggers),
        # the drift's own episode: the first one the monitor opened after the onset
        "triggers_in_episode": (episodes or [0])[0],
        "triggers_per_episode": episodes,  # every episode after the onset (a later one is a new alarm)
        "false_alarms_before_onset": sum(not after_onset(e) for e in triggers),
        "escalations": sum(bool(e.get("escalate")) and not e.get("follow_up") for e in triggers),
        "follow_ups": sum(bool(e.get("follow_up")) for e in triggers),
        "pages": sum(e["decision"] == "exhausted" for e in timeline.entries),  # breached, retrains spent
        "trigger_signals": [e.get("signals", []) for e in triggers],
        "versions": versions,
        "chosen_candidates": {str(v): m["window"]["chosen"] for v, m in metadata.items() if "window" in m},
        "swaps": timeline.swaps,
        "scheduled_updates": {
            "every": str(cfg.update_every) if cfg.update_every else None,
            "started": sum("run_id" in u for u in timeline.updates),
            "skipped": sum("skipped" in u for u in timeline.updates),
            "completed": sum(u.get("state") == "succeeded" for u in timeline.updates),  # published or refused
        },
        "auc_before_drift": _mean_auc(before),
        "auc_after_drift": _mean_auc(between),
        "auc_after_swap": _mean_auc(after),
        **yardsticks,
        "impressions_sent": timeline.impressions_sent,
        "impressions_logged": store.count_impressions(),
        "requests_failed": timeline.requests_failed,
        "simulated_from": start.isoformat(),
    }


def hours(iso: str) -> float:
    """Simulated days since the demo's epoch (fractional) of an ISO time."""
    return (datetime.fromisoformat(iso) - EPOCH).total_seconds() / 86400


def write_report(cfg: DemoConfig, timeline: Timeline, summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in timeline.entries if e["auc"] is not None]
    fig, ax = plt.subplots(figsize=(12, 4.5), dpi=110)
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
    styles = {"oracle": ("k", "oracle (true probabilities)"), "drifted": ("tab:gray", "version 1, never replaced")}
    styles["counterfactual"] = ("tab:olive", "counterfactual full retrain at the first trigger")
    styles["counterfactual_24h"] = ("tab:brown", "counterfactual full retrain at onset + 24 h")
    styles["counterfactual_24h_recent"] = ("tab:purple", "the same on the 24 h after the onset alone")
    pairs = [(e, y) for e, y in zip(timeline.entries, timeline.yardsticks, strict=False) if e["auc"] is not None]
    for name, (color, label) in styles.items():
        points = [(hours(e["as_of"]), y[name]) for e, y in pairs if y.get(name) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, "-", color=color, linewidth=1.2, alpha=0.8, label=label + " (same impressions)")
    thresholds = [(hours(e["as_of"]), e["threshold"]) for e in timeline.entries if e.get("threshold") is not None]
    if thresholds:
        xs, ys = zip(*thresholds, strict=True)
        ax.step(xs, ys, where="post", color="tab:red", linestyle="--", label="threshold (shipped rules)")
    ax.axvline(cfg.drift_day, color="tab:orange", label=f"{cfg.drift} drift onset")
    for e in timeline.entries:
        if e["decision"] == "trigger" and e["submission"] == "ok":
            ax.axvline(hours(e["as_of"]), color="tab:purple", linestyle=":", label="retraining triggered")
    for s in timeline.swaps:
        label = "a new version served" if cfg.update_every else f"version {s['version']} served"
        ax.axvline(hours(s["at"]), color="tab:green", linestyle="-.", alpha=0.6, label=label)
    ax.set_xlabel("simulated day")
    ax.set_ylabel("AUC-ROC")
    ax.set_title(f"ctr-loop demo: {cfg.drift} drift, retrains, recovery against the yardsticks")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one legend entry per label
    ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(cfg.report_dir / "auc.png")
    plt.close(fig)
    (cfg.report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = "\n".join(
        _row(e, y) for e, y in zip(timeline.entries, timeline.yardsticks or [{}] * len(timeline.entries), strict=True)
    )
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
<th>95% CI</th><th>calibration</th><th>oracle AUC</th><th>v1 AUC</th><th>counterfactual AUC (first trigger)</th>
<th>counterfactual AUC (onset + 24 h)</th><th>counterfactual AUC (the 24 h after the onset alone)</th>
<th>drift share</th><th>decision</th><th>reason</th></tr>{rows}</table></body></html>""")


def _row(e: dict[str, Any], y: dict[str, Any]) -> str:
    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.4f}"

    interval = "" if e["auc"] is None else f"[{e['auc_lower']:.4f}, {e['auc_upper']:.4f}]"
    drift = "" if e["drift_share"] is None else f"{e['drift_share']:.2f}"
    cells = [
        e["as_of"],
        f"v{e['serving_version']}",
        str(e["labelled"]),
        num(e["auc"]),
        interval,
        num(e.get("calibration")),
        num(y.get("oracle")),
        num(y.get("drifted")),
        num(y.get("counterfactual")),
        num(y.get("counterfactual_24h")),
        num(y.get("counterfactual_24h_recent")),
        drift,
        e["decision"],
        e["reason"],
    ]
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
