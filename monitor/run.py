"""One monitor run (what the CronJob executes): measure, decide, maybe trigger, record.

Decisions, in order: ``insufficient-data`` (fewer positives or negatives than the rules ask)
→ ``no-trigger`` (no breach: the AUC interval's upper bound is not below the threshold for
``consecutive_breaches`` runs) → ``in-flight`` (a pipeline run holds the repository lease)
→ ``cooldown`` (a trigger or alert was issued within ``cooldown``) → ``trigger``.
A failed submission is recorded with ``submission = failed`` and does not start the
cooldown, so the next run retries. Every run but a dry run writes one ``monitor_runs`` row,
under a database lease, so concurrent runs decide one after the other and trigger once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import desc, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from ctr.errors import CtrError
from ctr.events.store import EventStore, StoreUnavailable, redacted
from ctr.events.tables import monitor_runs
from ctr.ids import uuid7
from ctr.lease import holder as repository_lease
from ctr.metrics import calibration, log_loss
from ctr.repository import ModelRepository
from ctr.retrain_request import RetrainRequest
from ctr.timeutil import from_us, to_us, utcnow
from monitor.decision import Decision, Evidence, History, decide
from monitor.drift import drift_report
from monitor.monitor_lease import release, try_acquire
from monitor.push import push_metrics
from monitor.rules import Rules
from monitor.stats import calibration_interval, delong_auc, expected_auc, normalized_entropy
from monitor.triggers import (
    TRIGGER,
    SubmissionFailed,
    kfp_run_state,
    local_run_state,
    run_source,
    start_local,
    submit_kfp,
)
from monitor.window import LabelledWindow, load_window

TriggerKind = Literal["none", "local", "kfp"]


class MonitorBusy(CtrError):
    """Another monitor run holds the lease."""


@dataclass(frozen=True)
class KfpSettings:
    host: str = ""
    token: str | None = None
    namespace: str | None = None
    experiment: str = "ctr-loop"


@dataclass(frozen=True)
class MonitorRequest:
    db_url: str
    repo: Path
    rules: Rules
    trigger: TriggerKind = "none"
    as_of: datetime | None = None
    dry_run: bool = False
    pushgateway: str | None = None
    report_dir: Path | None = None
    target: RetrainRequest | None = None  # what a trigger runs (``now`` and the run id filled in)
    kfp: KfpSettings = KfpSettings()


def _metrics(window: LabelledWindow, confidence: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labelled": int(window.label.size),
        "positives": window.positives,
        "negatives": window.negatives,
        "auc": None,
        "auc_lower": None,
        "auc_upper": None,
        "logloss": None,
        "calibration": None,
        "calibration_lower": None,
        "calibration_upper": None,
        "normalized_entropy": None,
        "expected_auc": None,
    }
    order = np.argsort(window.pctr, kind="stable")  # one sort for both AUCs
    if window.label.size >= 2:
        out["expected_auc"] = round(expected_auc(window.pctr, order), 6)
        out["logloss"] = round(log_loss(window.label, window.pctr), 6)
    if window.positives > 0:
        out["calibration"] = round(calibration(window.label, window.pctr), 6)
        interval = calibration_interval(window.label, window.pctr, confidence)
        if interval is not None:
            out["calibration_lower"] = round(interval.lower, 6)
            out["calibration_upper"] = round(interval.upper, 6) if math.isfinite(interval.upper) else None
        ne = normalized_entropy(window.label, window.pctr)
        out["normalized_entropy"] = None if ne is None else round(ne, 6)
    if window.positives > 0 and window.negatives > 0:
        ci = delong_auc(window.label, window.pctr, confidence, order)
        out |= {"auc": round(ci.auc, 6), "auc_lower": round(ci.lower, 6), "auc_upper": round(ci.upper, 6)}
    return out


def _per_version(window: LabelledWindow, confidence: float, overall: dict[str, Any]) -> dict[str, Any]:
    versions = np.unique(window.version).tolist()
    if len(versions) == 1:  # the whole window was served by one version
        return {str(versions[0]): overall}
    result = {}
    for v in versions:
        mask = window.version == v
        part = LabelledWindow(
            window.start_us, window.end_us, window.pctr[mask], window.label[mask], window.version[mask]
        )
        result[str(v)] = _metrics(part, confidence)
    return result


def _previous(store: EventStore, limit: int) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = (
            conn.execute(
                select(monitor_runs).order_by(desc(monitor_runs.c.as_of_us), desc(monitor_runs.c.id)).limit(limit)
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def _last_trigger(store: EventStore) -> dict[str, Any] | None:
    query = (
        select(monitor_runs)
        .where(monitor_runs.c.decision == "trigger", monitor_runs.c.submission.in_(["ok", "none"]))
        .order_by(desc(monitor_runs.c.as_of_us), desc(monitor_runs.c.id))
        .limit(1)
    )
    with store.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def _breach_since(store: EventStore, as_of: datetime) -> datetime:
    """When the current breach began: the first breached record after the last calm one (a record
    with evidence, no breach, every point estimate inside — ``clear`` — and a window served by one
    version), or ``as_of`` when none follows it — this run's breach is the first of its streak.
    ``insufficient-data`` records neither start nor end a streak, and neither does a calm window
    shared by two versions: the version a retrain published has not yet been judged on its own
    (``settling``), so it has not yet repaired anything."""
    calm = select(monitor_runs.c.as_of_us, monitor_runs.c.record).where(
        monitor_runs.c.breach.is_(False), monitor_runs.c.decision != "insufficient-data"
    )
    with store.engine.connect() as conn:
        last_calm = None
        for at, raw in conn.execute(calm.order_by(desc(monitor_runs.c.as_of_us)).limit(50)):
            record = json.loads(str(raw))
            # records written before "clear" existed count as calm, as they did then
            if len(record.get("per_version", {})) <= 1 and record.get("clear", True):
                last_calm = at
                break
        first = select(monitor_runs.c.as_of_us).where(monitor_runs.c.breach.is_(True))
        if last_calm is not None:
            first = first.where(monitor_runs.c.as_of_us > last_calm)
        found = conn.execute(first.order_by(monitor_runs.c.as_of_us).limit(1)).scalar()
    return as_of if found is None else from_us(int(found))


def _episode_triggers(store: EventStore, since: datetime) -> int:
    """Triggers issued (submitted, or recorded without submission) at or after ``since``."""
    query = select(func.count()).where(
        monitor_runs.c.decision == "trigger",
        monitor_runs.c.submission.in_(["ok", "none"]),
        monitor_runs.c.as_of_us >= to_us(since),
    )
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def _episode_since(last: dict[str, Any] | None) -> datetime | None:
    """When the breach of the last trigger's episode began, as that trigger recorded it
    (``episode_since``; None for records written before it was kept, or no trigger)."""
    if last is None:
        return None
    since = json.loads(str(last["record"])).get("episode_since")
    return None if since is None else datetime.fromisoformat(since)


def _run_state(req: MonitorRequest, last: dict[str, Any]) -> str:
    """What became of the run the last trigger started (recorded as ``last_run``)."""
    if last["trigger"] == "local" and req.target is not None:
        return local_run_state(Path(req.target.work_dir) / "logs", last["run_id"])
    if last["trigger"] == "kfp" and req.kfp.host:
        return kfp_run_state(last["run_id"], req.kfp.host, req.kfp.token, req.kfp.namespace)
    return "unknown"


def _own_level(store: EventStore, version: int, windows: int, metric: str = "auc") -> float | None:
    """A version's own windowed ``metric`` (``auc`` or ``calibration``): the median of the first
    ``windows`` records whose whole window it served, each with enough labels; None until there
    are that many."""
    # A window with enough labels (not insufficient-data) has both an AUC and a calibration: the
    # AUC column, the only one of the two indexed as a column, narrows the scan.
    query = (
        select(monitor_runs.c.record)
        .where(monitor_runs.c.serving_version == version, monitor_runs.c.auc.is_not(None))
        .order_by(monitor_runs.c.as_of_us, monitor_runs.c.id)
        .limit(200)
    )
    found: list[float] = []
    with store.engine.connect() as conn:
        for (raw,) in conn.execute(query):
            record = json.loads(str(raw))
            own = record.get("per_version", {})
            measured = record["decision"] != "insufficient-data" and record.get(metric) is not None
            if list(own) == [str(version)] and measured:
                found.append(float(record[metric]))
                if len(found) == windows:
                    return round(float(np.median(found)), 6)
    return None


def _anchor(repo: ModelRepository, version: int, metric: str = "auc") -> int:
    """The version whose learned level ``version`` is judged against. The walk goes from an
    incremental version to its warm start (``parent_version``) and, for the AUC only, from a full
    version a monitor trigger published (run id ``monitor-…``) to the version it replaced (its
    gate's ``serving_version``): a retrain that half repairs a breach, warm or from scratch, must
    not lower the bar. It stops at a full version started any other way (by hand, the setup's, a
    schedule's: it sets a new level), at a version pruned from the repository (its child is
    returned) and at a cycle in hand-edited metadata. The calibration level walks warm starts
    only: a full retrain's level is its own, since a full model's over-prediction of its
    top-scored ads is its own."""
    seen, published = {version}, set(repo.versions())
    while True:
        meta = repo.metadata(version)
        parent = meta.get("parent_version") if meta.get("mode") == "incremental" else None
        pipeline = meta.get("pipeline", {})
        if parent is None and metric == "auc" and run_source(str(pipeline.get("run_id", ""))) == TRIGGER:
            parent = pipeline.get("gate", {}).get("serving_version")
        if parent is None or int(parent) in seen or int(parent) not in published:
            return version
        version = int(parent)
        seen.add(version)


def _learned_baseline(
    store: EventStore, repo: ModelRepository, serving: int | None, rules: Rules, metric: str = "auc"
) -> float | None:
    """The ``baseline: learned`` rules (``auc``, and ``calibration`` alike): the windowed metric of
    the serving version's ``_anchor`` (the median of its first ``auc.baseline_windows`` windows of
    its own, with enough labels: the very first window after a fresh start holds a fraction of
    the traffic and reads high or low by chance); else the serving version's own."""
    wanted = rules.learned_baseline if metric == "auc" else rules.calibration_learned
    if serving is None or not wanted:
        return None
    anchor = _anchor(repo, serving, metric)
    n = rules.baseline_windows
    found = _own_level(store, anchor, n, metric) if anchor != serving else None
    return found if found is not None else _own_level(store, serving, n, metric)


def _history(
    req: MonitorRequest, store: EventStore, repo: ModelRepository, serving: int | None, as_of: datetime
) -> tuple[History, dict[str, Any] | None]:
    """What earlier runs and the pipeline left (the I/O around ``decide``), and the last trigger's
    record; what became of its run is asked for later, only when the decision needs it."""
    lease = repository_lease(repo)
    in_flight = lease is not None and int(lease.get("expires_us", 0)) > to_us(utcnow())
    last = _last_trigger(store)
    since = _breach_since(store, as_of)
    began = _episode_since(last)
    history = History(
        previous_breaches=tuple(bool(p["breach"]) for p in _previous(store, req.rules.consecutive_breaches - 1)),
        learned_baseline=_learned_baseline(store, repo, serving, req.rules),
        learned_calibration=_learned_baseline(store, repo, serving, req.rules, "calibration"),
        lease_run_id=str(lease.get("run_id")) if in_flight and lease else None,
        last_trigger_at=from_us(last["as_of_us"]) if last else None,
        last_trigger_run=last.get("run_id") if last else None,
        last_trigger_version=last.get("serving_version") if last else None,
        breach_since=since,
        episode_triggers=_episode_triggers(store, since) if last else 0,
        last_episode_since=began,
        last_episode_triggers=_episode_triggers(store, began) if began is not None else 0,
        serving_version=serving,
    )
    return history, last


def _evidence(record: dict[str, Any], repo: ModelRepository, serving: int | None) -> Evidence:
    valid = repo.metadata(serving).get("metrics", {}).get("auc") if serving is not None else None
    own = record["per_version"].get(str(serving), {}).get("labelled", 0)
    fields = ("auc", "auc_lower", "auc_upper", "calibration", "calibration_lower", "calibration_upper")
    return Evidence(
        positives=record["positives"],
        negatives=record["negatives"],
        validation_auc=None if valid is None else float(valid),
        serving_share=own / record["labelled"] if record["labelled"] else 1.0,
        **{k: record[k] for k in fields},
    )


def _decide(
    req: MonitorRequest, store: EventStore, repo: ModelRepository, record: dict[str, Any], as_of: datetime
) -> None:
    """Gather the evidence and history, ``decide``, then submit a triggered run."""
    history, last = _history(req, store, repo, record["serving_version"], as_of)
    evidence = _evidence(record, repo, record["serving_version"])
    outcome = decide(evidence, history, req.rules, as_of)
    if outcome.decision in ("cooldown", "trigger") and last and last.get("run_id"):
        # What became of the last run (a KFP call or a log read) only shows in these two outcomes.
        history = replace(history, last_run_state=_run_state(req, last))
        outcome = decide(evidence, history, req.rules, as_of)
    record |= {
        "decision": outcome.decision,
        "reason": outcome.reason,
        "threshold": outcome.threshold,
        "breach": outcome.breach,
        "consecutive_breaches": outcome.consecutive_breaches,
        "signals": list(outcome.signals),
        "learned_baseline": history.learned_baseline,
        "learned_calibration": history.learned_calibration,
        "escalate": outcome.escalate,
        "clear": outcome.clear,
        "follow_up": outcome.follow_up,
    }
    if history.last_run_state is not None and outcome.decision in ("cooldown", "trigger"):
        record["last_run"] = {"run_id": history.last_trigger_run, "state": history.last_run_state}
    if outcome.decision != "trigger":
        return
    record["episode_since"] = episode_began(outcome, history, as_of).isoformat()
    if req.trigger == "none" or req.dry_run:
        record["submission"] = "none"
        return
    if req.target is None:
        raise CtrError("a pipeline target (repository, event log, data) is needed to trigger")
    target = triggered_request(req.target, outcome, history, req.rules, as_of)
    if target.mode == "full":
        record["mode"] = "full"
    try:
        if req.trigger == "local":
            record["run_id"] = start_local(target, as_of, req.db_url, Path(target.work_dir) / "logs")
        else:
            record["run_id"] = submit_kfp(
                target, as_of, req.kfp.host, req.kfp.token, req.kfp.namespace, req.kfp.experiment
            )
        record["submission"] = "ok"
    except SubmissionFailed as exc:
        record |= {"submission": "failed", "reason": f"{record['reason']}; submission failed: {exc}"}


def episode_began(outcome: Decision, history: History, as_of: datetime) -> datetime:
    """When the episode of a trigger began: for a follow-up, the episode it follows up; else the
    current breach's (``as_of`` when this run's breach is the first of its streak)."""
    began = history.last_episode_since if outcome.follow_up else history.breach_since
    return began or as_of


def triggered_request(
    target: RetrainRequest, outcome: Decision, history: History, rules: Rules, as_of: datetime
) -> RetrainRequest:
    """The run a trigger asks for: ``target`` with ``retrain.challenge``; for an escalation or a
    follow-up (``outcome.escalate``), a full retrain since its episode began (``escalated``)."""
    target = target.replace(challenge=rules.challenge)
    if outcome.escalate and history.last_trigger_at is not None:
        return escalated(target, episode_began(outcome, history, as_of), rules)
    return target


def escalated(target: RetrainRequest, breach_since: datetime, rules: Rules) -> RetrainRequest:
    """The run an escalation asks for: a full retrain (from scratch) on the history days of
    ``data_dir`` and the event log since the breach began (the window start of the first
    breached record of the current streak: every retry of an escalation sees more of it).

    >>> from datetime import UTC, timedelta
    >>> t = RetrainRequest(repo="r", events=True, since="-6h", data_dir="history")
    >>> e = escalated(t, datetime(2026, 1, 5, 6, tzinfo=UTC), Rules(max_age=timedelta(hours=6)))
    >>> (e.mode, e.since, e.data_dir)
    ('full', '2026-01-05T00:00:00+00:00', 'history')
    """
    return target.replace(mode="full", since=(breach_since - rules.max_age).isoformat())


def run_monitor(req: MonitorRequest) -> dict[str, Any]:
    """Measure and decide; returns the decision record (also stored unless ``dry_run``)."""
    as_of = req.as_of or utcnow()
    store = EventStore(req.db_url)
    if not store.ping():
        raise StoreUnavailable(f"event database {redacted(req.db_url)} is unreachable; no decision recorded")
    repo = ModelRepository(req.repo)
    holder = f"monitor-{uuid7()}"
    try:
        acquired = req.dry_run or try_acquire(store, holder, req.rules.lease_ttl)
    except SQLAlchemyError as exc:
        raise store.failure("take the monitor lease", exc) from exc
    if not acquired:
        raise MonitorBusy("another monitor run holds the lease; this run made no decision")
    try:
        window = load_window(store, req.rules, as_of)
        serving = repo.served()
        overall = _metrics(window, req.rules.confidence)
        record: dict[str, Any] = {
            "as_of": as_of.isoformat(),
            "as_of_us": to_us(as_of),
            "window_start": from_us(window.start_us).isoformat(),
            "window_end": from_us(window.end_us).isoformat(),
            "serving_version": serving,
            **overall,
            "per_version": _per_version(window, req.rules.confidence, overall),
            "threshold": None,
            "breach": False,
            "trigger": req.trigger,
            "run_id": None,
            "submission": "none",
            "drift_share": None,
        }
        if req.rules.drift_enabled and serving is not None and req.report_dir is not None and window.label.size:
            record["drift_share"] = drift_report(
                store, repo, serving, window.start_us, window.end_us, req.rules.drift_sample_rows, req.report_dir
            )
        _decide(req, store, repo, record, as_of)
        if not req.dry_run:
            _store(store, record, window)
    except SQLAlchemyError as exc:
        raise store.failure("measure and decide", exc) from exc
    finally:
        if not req.dry_run:
            release(store, holder)
    if req.pushgateway and not req.dry_run:
        push_metrics(req.pushgateway, record)
    return record


def _store(store: EventStore, record: dict[str, Any], window: LabelledWindow) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            insert(monitor_runs).values(
                started_at_us=to_us(utcnow()),
                as_of_us=record["as_of_us"],
                window_start_us=window.start_us,
                window_end_us=window.end_us,
                labelled=record["labelled"],
                positives=record["positives"],
                auc=record["auc"],
                auc_lower=record["auc_lower"],
                auc_upper=record["auc_upper"],
                threshold=record["threshold"],
                breach=record["breach"],
                decision=record["decision"],
                reason=record["reason"],
                trigger=record["trigger"],
                run_id=record["run_id"],
                submission=record["submission"],
                serving_version=record["serving_version"],
                record=json.dumps(record),
            )
        )


def history(db_url: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest decision records, newest first; ``StoreUnavailable`` if the database cannot be read."""
    store = EventStore(db_url)
    try:
        return [json.loads(r["record"]) for r in _previous(store, limit)]
    except SQLAlchemyError as exc:
        raise store.failure("read monitor decisions", exc) from exc
    finally:
        store.dispose()
