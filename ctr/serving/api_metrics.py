"""Prometheus metrics of the score API (``/metrics``): latency by endpoint and stage, errors by
kind, candidates per request, impressions made durable (store or spool), quarantined rows."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    """The API's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "ctr_api_request_seconds",
            "Request latency",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.candidates = Histogram(
            "ctr_api_candidates_per_request",
            "Candidates per score request",
            registry=self.registry,
            buckets=(1, 10, 50, 100, 200, 500, 1000),
        )
        self.errors = Counter("ctr_api_errors_total", "Errors by kind", ["kind"], registry=self.registry)
        self.triton = Histogram(
            "ctr_api_triton_seconds",
            "Triton call latency",
            registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
        )
        self.stages = Histogram(
            "ctr_api_stage_seconds",
            "Time per stage of /v1/score; commit: one group commit (impressions and clicks of several requests)",
            ["stage"],
            registry=self.registry,
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
        )
        self.spooled = Gauge("ctr_api_spool_bytes", "Bytes waiting in the impression spool", registry=self.registry)
        self.impressions = Counter(
            "ctr_api_impressions_total", "Impressions made durable", ["where"], registry=self.registry
        )
        self.quarantined = Counter(
            "ctr_api_quarantined_total",
            "Event rows the database refused for their content, kept in its quarantine table",
            ["kind"],
            registry=self.registry,
        )
        self.repeats = Counter(
            "ctr_api_repeated_requests_total", "Score requests answered from an earlier answer", registry=self.registry
        )
