"""Push the decision's numbers to a Prometheus Pushgateway (a failure is a warning only)."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway

log = logging.getLogger(__name__)
JOB = "ctr_monitor"


def push_metrics(url: str, record: dict[str, Any]) -> bool:
    registry = CollectorRegistry()
    version = str(record.get("serving_version"))
    auc = Gauge("ctr_monitor_auc", "Windowed AUC of served impressions", ["model_version"], registry=registry)
    lower = Gauge("ctr_monitor_auc_lower", "Lower bound of the AUC interval", ["model_version"], registry=registry)
    labelled = Gauge(
        "ctr_monitor_labelled_impressions", "Labelled impressions in the window", ["model_version"], registry=registry
    )
    drift = Gauge("ctr_monitor_drift_share", "Share of drifted features", ["model_version"], registry=registry)
    triggers = Counter(
        "ctr_monitor_triggers", "Retraining triggers issued by this run", ["model_version"], registry=registry
    )
    last = Gauge("ctr_monitor_last_run_timestamp_seconds", "When the monitor last ran", registry=registry)
    if record.get("auc") is not None:
        auc.labels(version).set(record["auc"])
        lower.labels(version).set(record["auc_lower"])
    labelled.labels(version).set(record.get("labelled", 0))
    if record.get("drift_share") is not None:
        drift.labels(version).set(record["drift_share"])
    triggers.labels(version).inc(1 if record.get("decision") == "trigger" and record.get("submission") == "ok" else 0)
    last.set(record["as_of_us"] / 1e6)
    try:
        push_to_gateway(url, job=JOB, registry=registry, timeout=5)
        return True
    except OSError as exc:
        log.warning("pushgateway %s unreachable (%s); the run continues", url, exc)
        return False
