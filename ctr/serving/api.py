"""``ctr api``: the score service ad servers call (FastAPI).

``POST /v1/score`` validates a request, scores every candidate on Triton (KServe v2 over
gRPC, with a deadline), ranks by pCTR, assigns each returned ad an impression id (UUIDv7)
and makes the impressions durable — in the event log, or in the on-disk spool while the
log is unreachable — before it answers. ``POST /v1/clicks`` records clicks idempotently.
Impressions and clicks of concurrent requests share one group commit (``GroupCommitWriter``).

Failure contract: bad input → 4xx naming the field, nothing logged (a body that is not
``application/json`` → 415); Triton down or slow → 503 with ``Retry-After`` within the
deadline; event log down, slow or locked (statements are bounded by half the deadline, lock
waits by a quarter) → impressions spooled (503 only when the spool is full); a row the
database refuses for its content → quarantined, the rest logged; missing, wrong or malformed
API key (when keys are configured) → 401. With keys configured the OpenAPI document and docs
are off, and ``/metrics`` needs the key unless it is served on its own port.

Delivery is at least once: an answered request's impressions are durable; a request that
timed out on the client's side may have been logged, and its retry with the same
``request_id`` (within ``idempotency_window_s``, on the same replica) gets the first answer.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ctr.errors import InputError, first_line
from ctr.events.spool import Spool, SpoolFull
from ctr.events.store import ClickCounts, ClickWindow, ContentRefused, EventStore, StoreUnavailable
from ctr.events.writer import GroupCommitWriter
from ctr.ids import uuid7
from ctr.repository import MAX_BATCH_SIZE, MODEL_NAME
from ctr.serving.features import feature_columns
from ctr.serving.idempotency import RecentAnswers
from ctr.serving.request import ClickRequest, ScoreInput, ScoreRequest, decode_click_request, decode_score_request
from ctr.settings import env_int, env_or_file
from ctr.timeutil import to_us, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiSettings:
    """Configuration; ``from_env`` reads ``CTR_*`` variables (12-factor)."""

    triton: str = "localhost:8001"
    db_url: str = "sqlite:///ctr-events.db"
    max_candidates: int = 1000
    max_body_bytes: int = 1_000_000
    deadline_ms: int = 200
    spool_dir: Path = Path("ctr-spool")
    spool_max_bytes: int = 64 * 1024 * 1024
    api_keys: tuple[str, ...] = field(default_factory=tuple)
    migrate: bool = True
    metrics_port: int | None = None  # serve /metrics on its own port (then not on the API's)
    idempotency_window_s: int = 600
    click_max_delay_s: int = 86_400

    def __post_init__(self) -> None:
        """Refuse limits the service could not run with (``InputError``, before it binds a port)."""
        for name in (
            "max_candidates",
            "max_body_bytes",
            "deadline_ms",
            "spool_max_bytes",
            "idempotency_window_s",
            "click_max_delay_s",
        ):
            if getattr(self, name) < 1:
                raise InputError(f"{name} (CTR_{name.upper()}) must be at least 1, got {getattr(self, name)}")
        if self.max_candidates > MAX_BATCH_SIZE:
            raise InputError(
                f"max_candidates (CTR_MAX_CANDIDATES) must be at most {MAX_BATCH_SIZE}, Triton's max batch size; "
                f"got {self.max_candidates}"
            )
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise InputError(f"metrics_port (CTR_METRICS_PORT) must be a TCP port, got {self.metrics_port}")
        for key in self.api_keys:
            if not key.isascii() or not key.isprintable():
                raise InputError("API keys (CTR_API_KEYS) must be printable ASCII")

    @classmethod
    def from_env(cls, **overrides: Any) -> ApiSettings:
        env = os.environ
        values: dict[str, Any] = {
            "triton": env.get("CTR_TRITON", cls.triton),
            "db_url": env_or_file("CTR_DB_URL", cls.db_url),
            "max_candidates": env_int("CTR_MAX_CANDIDATES", cls.max_candidates),
            "max_body_bytes": env_int("CTR_MAX_BODY_BYTES", cls.max_body_bytes),
            "deadline_ms": env_int("CTR_DEADLINE_MS", cls.deadline_ms),
            "spool_dir": Path(env.get("CTR_SPOOL_DIR", str(cls.spool_dir))),
            "spool_max_bytes": env_int("CTR_SPOOL_MAX_BYTES", cls.spool_max_bytes),
            "api_keys": tuple(k.strip() for k in (env_or_file("CTR_API_KEYS") or "").split(",") if k.strip()),
            "migrate": env.get("CTR_MIGRATE", "1") != "0",
            "metrics_port": env_int("CTR_METRICS_PORT", 0) or None,
            "idempotency_window_s": env_int("CTR_IDEMPOTENCY_WINDOW_S", cls.idempotency_window_s),
            "click_max_delay_s": env_int("CTR_CLICK_MAX_DELAY_S", cls.click_max_delay_s),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class ScoredAd(BaseModel):
    ad_id: str
    impression_id: str
    pctr: float


class ScoreResponse(BaseModel):
    request_id: str
    model_version: int
    results: list[ScoredAd]


class ClickResponse(BaseModel):
    accepted: int
    duplicate: int
    unknown: int
    out_of_window: int


Impressions = list[dict[str, Any]]  # the rows one score request logs


@dataclass(frozen=True)
class Clicks:
    """The clicks one click request records."""

    impression_ids: list[str]
    clicked_at_us: int


def _event_count(payload: Impressions | Clicks) -> int:
    return len(payload.impression_ids) if isinstance(payload, Clicks) else len(payload)


class _Backlog(Exception):
    """Spooled impressions wait: new ones go behind them without asking the database."""


class TritonUnavailable(Exception):
    """Triton could not answer within the deadline."""


class _Metrics:
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


class TritonScorer:
    """KServe v2 gRPC client for the dcn model, with a deadline on every call."""

    def __init__(self, url: str, deadline_s: float) -> None:
        import tritonclient.grpc.aio as grpcclient

        self._mod = grpcclient
        self.url = url
        self.deadline_s = deadline_s
        self.client = grpcclient.InferenceServerClient(url)

    async def score(self, dense: np.ndarray, sparse: np.ndarray) -> tuple[np.ndarray, int]:
        from tritonclient.utils import InferenceServerException

        g = self._mod
        inputs = [g.InferInput("dense", list(dense.shape), "FP32"), g.InferInput("sparse", list(sparse.shape), "INT64")]
        inputs[0].set_data_from_numpy(dense.astype(np.float32))
        inputs[1].set_data_from_numpy(sparse)
        outputs = [g.InferRequestedOutput("pctr"), g.InferRequestedOutput("model_version")]
        try:
            result = await self.client.infer(MODEL_NAME, inputs, outputs=outputs, client_timeout=self.deadline_s)
        except InferenceServerException as exc:
            raise TritonUnavailable(first_line(exc)) from exc
        versions = result.as_numpy("model_version").reshape(-1)
        return result.as_numpy("pctr").reshape(-1), int(versions[0])

    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_model_ready(MODEL_NAME, client_timeout=1.0))
        except Exception:  # any transport error means "not ready"
            return False

    async def close(self) -> None:
        await self.client.close()


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": [], "msg": message, "type": kind}]}, status_code=status, headers=headers)


def create_app(settings: ApiSettings, store: EventStore | None = None) -> FastAPI:
    """The FastAPI application (one per process; ``store`` may be given for tests).

    The event store and the spool are built here, not at start-up: a malformed database URL or
    a spool directory that cannot be created is an ``InputError`` before a server runs.
    """
    metrics = _Metrics()
    events = store or EventStore(
        settings.db_url,
        click_window=ClickWindow(max_delay=timedelta(seconds=settings.click_max_delay_s)),
        lock_timeout_ms=max(settings.deadline_ms // 4, 1),
        statement_timeout_ms=max(settings.deadline_ms // 2, 1),
    )
    spool = Spool(settings.spool_dir, settings.spool_max_bytes)
    answers = RecentAnswers(settings.idempotency_window_s)
    state: dict[str, Any] = {}  # what the lifespan starts: Triton's client, the writer, migrated
    keys_required = bool(settings.api_keys)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate:
            state["migrated"] = await run_in_threadpool(_migrate)
        if settings.metrics_port is not None:
            start_http_server(settings.metrics_port, addr="0.0.0.0", registry=metrics.registry)
        state["triton"] = TritonScorer(settings.triton, settings.deadline_ms / 1000)
        state["writer"] = GroupCommitWriter(_make_durable, size=_event_count)
        state["writer"].start()
        replayer = asyncio.create_task(_replay_forever())
        # What start-up left alive (modules, schemas, clients) leaves the collector's generations:
        # full collections then scan request garbage only (over the whole heap they took ~70 ms
        # here, a stall for every request in flight).
        gc.collect()
        gc.freeze()
        # The event loop and the writer thread share the GIL: hand it over within 1 ms rather
        # than the default 5 ms, which a commit waiting on a busy loop otherwise pays.
        sys.setswitchinterval(0.001)
        yield
        replayer.cancel()
        await state["writer"].stop()
        await state["triton"].close()
        if store is None:
            events.dispose()

    async def _replay_forever() -> None:
        """Drain the spool while it holds batches; nothing that goes wrong in one pass ends the loop."""
        migrated = not settings.migrate or state.get("migrated", False)
        counted: dict[str, int] = {}  # quarantined rows already in the metric, by kind
        while True:
            await asyncio.sleep(0.5)
            try:
                if not migrated:  # the database was down at start: the schema (quarantine included) first
                    migrated = await run_in_threadpool(_migrate)
                if spool.holds_batches() and migrated:
                    await run_in_threadpool(spool.replay, events)
                metrics.spooled.set(spool.size_bytes())
                for kind, n in dict(events.quarantined_rows).items():  # from the commit path and the replay
                    metrics.quarantined.labels(kind).inc(n - counted.get(kind, 0))
                    counted[kind] = n
            except Exception:  # logged and retried next pass: a dead replay loop would spool forever
                metrics.errors.labels("replay").inc()
                log.exception("spool replay failed; retrying")

    def _migrate() -> bool:
        """The schema at the newest revision, through an engine without the request path's time-outs."""
        unbounded = EventStore(settings.db_url) if store is None else events
        try:
            unbounded.migrate()
            return True
        except StoreUnavailable as exc:
            log.warning("event log not migrated (%s); impressions spool until it is", exc)
            return False
        finally:
            if unbounded is not events:
                unbounded.dispose()

    app = FastAPI(
        title="ctr-loop score API",
        version="1",
        lifespan=lifespan,
        description="Ranks candidate ads by predicted CTR and logs impressions and clicks.",
        # With API keys the service is not for strangers: no schema or docs to read.
        openapi_url=None if keys_required else "/openapi.json",
        docs_url=None if keys_required else "/docs",
        redoc_url=None if keys_required else "/redoc",
    )
    _publish_body_schemas(app, [ScoreRequest, ClickRequest])

    app.add_middleware(_Guard, settings=settings, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("invalid").inc()
        errors = [
            {"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        openapi_extra=_json_body(ScoreRequest),
        responses={
            401: {"description": "Missing or invalid API key"},
            413: {"description": "Body too large"},
            415: {"description": "Body is not application/json"},
            422: {"description": "Invalid request; `detail[].loc` names the field"},
            503: {"description": "Triton unavailable or spool full; retry after `Retry-After` seconds"},
        },
    )
    async def score(request: Request) -> Response:
        body = decode_score_request(await request.body())
        t_parsed = time.perf_counter()
        metrics.stages.labels("decode").observe(t_parsed - request.state.started)
        n = len(body.ad_ids)
        if n > settings.max_candidates:
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", "candidates"),
                        "type": "too_long",
                        "msg": f"at most {settings.max_candidates} candidates, got {n}",
                    }
                ]
            )
        # One client's request ids are not another's: the key includes who asked (the API key).
        key = None if body.request_id is None else f"{_caller(request)}:{body.request_id}"
        if key is not None:
            earlier = await answers.claim(key)
            if earlier is not None:
                metrics.repeats.inc()
                return Response(earlier, media_type="application/json")
        try:
            answer = await _score(body)
        except BaseException:
            if key is not None:
                answers.forget(key)
            raise
        if key is not None:
            if answer.status_code == 200:
                answers.resolve(key, bytes(answer.body))
            else:
                answers.forget(key)
        return answer

    async def _score(body: ScoreInput) -> Response:
        dense, sparse = body.dense, body.sparse
        metrics.candidates.observe(len(body.ad_ids))
        t0 = time.perf_counter()
        try:
            pctr, version = await state["triton"].score(dense, sparse)
        except TritonUnavailable as exc:
            metrics.errors.labels("triton").inc()
            return _error(503, "triton_unavailable", f"scoring backend unavailable: {exc}", {"Retry-After": "1"})
        t1 = time.perf_counter()
        metrics.triton.observe(t1 - t0)
        metrics.stages.labels("triton").observe(t1 - t0)
        order = np.argsort(-pctr, kind="stable")
        if body.top_k is not None:
            order = order[: body.top_k]
        request_id = body.request_id or uuid7()
        served_at = to_us(body.event_time or utcnow())
        features = feature_columns(dense[order], sparse[order])
        results, rows = [], []
        for rank, k in enumerate(order.tolist()):
            impression_id = uuid7()
            p = float(pctr[k])
            results.append({"ad_id": body.ad_ids[k], "impression_id": impression_id, "pctr": p})
            rows.append(
                {
                    "impression_id": impression_id,
                    "request_id": request_id,
                    "ad_id": body.ad_ids[k],
                    "served_at_us": served_at,
                    "model_version": version,
                    "pctr": p,
                    **features[rank],
                }
            )
        t2 = time.perf_counter()
        metrics.stages.labels("rank").observe(t2 - t1)
        try:
            await state["writer"].write(rows)
        except SpoolFull as exc:
            metrics.errors.labels("spool_full").inc()
            log.error("%s; answering 503", exc)
            return _error(503, "spool_full", "the impression log is full; retry later", {"Retry-After": "5"})
        metrics.stages.labels("store").observe(time.perf_counter() - t2)
        answer = {"request_id": request_id, "model_version": version, "results": results}
        return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")

    def _make_durable(payloads: list[Impressions | Clicks]) -> list[ClickCounts | Exception | None]:
        """One transaction for the impressions and clicks of several requests.

        Impressions go to the spool when the log is down (or behind a backlog, to keep their
        order); clicks are answered from the log or fail with ``StoreUnavailable``. Rows the
        log refuses for their content are quarantined by the store.
        """
        started = time.perf_counter()
        rows = [row for p in payloads if isinstance(p, list) for row in p]
        clicks = [(p.impression_ids, p.clicked_at_us) for p in payloads if isinstance(p, Clicks)]
        impressions_outcome: Exception | None = None
        counts: list[ClickCounts | ContentRefused] | Exception = []
        backlog = spool.holds_batches()
        try:
            if backlog and not clicks:  # nothing for the database now: the rows join the backlog
                raise _Backlog
            written = events.write([] if backlog else rows, clicks)
            counts = written.clicks
            if written.quarantined:  # ctr_api_quarantined_total counts it (the replay loop reads the store's count)
                log.error(
                    "%d impression rows refused by the event log for their content: quarantined", written.quarantined
                )
            if rows and not backlog:
                metrics.impressions.labels("store").inc(len(rows) - written.quarantined)
                rows = []
        except _Backlog:
            pass
        except StoreUnavailable as exc:
            metrics.errors.labels("store").inc()
            log.warning("event log unavailable (%s); %d impressions to the spool", exc, len(rows))
            counts = exc
        if rows:
            try:
                spool.append(rows)
                metrics.impressions.labels("spool").inc(len(rows))
            except SpoolFull as exc:
                impressions_outcome = exc
        click_counts = iter(counts) if isinstance(counts, list) else None
        metrics.stages.labels("commit").observe(time.perf_counter() - started)
        return [
            impressions_outcome if isinstance(p, list) else (next(click_counts) if click_counts else counts)
            for p in payloads
        ]

    @app.post(
        "/v1/clicks",
        response_model=ClickResponse,
        openapi_extra=_json_body(ClickRequest),
        responses={
            401: {"description": "Missing or invalid API key"},
            413: {"description": "Body too large"},
            415: {"description": "Body is not application/json"},
            422: {"description": "Invalid request"},
            503: {"description": "Event log unavailable; retry after `Retry-After` seconds"},
        },
    )
    async def record_clicks(request: Request) -> Any:
        body = decode_click_request(await request.body())
        # Impressions still in the spool would look unknown: give the replay until the deadline.
        waited_until = time.monotonic() + settings.deadline_ms / 1000
        while spool.holds_batches() and time.monotonic() < waited_until:
            await asyncio.sleep(0.01)
        if spool.holds_batches():
            metrics.errors.labels("store").inc()
            return _error(
                503,
                "store_unavailable",
                "impressions are still being written to the event log; retry",
                {"Retry-After": "1"},
            )
        try:
            counts = await state["writer"].write(Clicks(body.impression_ids, to_us(body.clicked_at or utcnow())))
        except StoreUnavailable as exc:
            metrics.errors.labels("store").inc()
            log.warning("clicks not recorded: %s", exc)
            return _error(503, "store_unavailable", "the event log is unavailable; retry", {"Retry-After": "5"})
        except ContentRefused as exc:
            raise RequestValidationError(
                [{"loc": ("body", "impression_ids"), "type": "refused", "msg": str(exc)}]
            ) from None
        return {
            "accepted": counts.accepted,
            "duplicate": counts.duplicate,
            "unknown": counts.unknown,
            "out_of_window": counts.out_of_window,
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "Not ready: Triton unavailable or the spool full"}})
    async def readyz() -> JSONResponse:
        """Ready while Triton answers and the spool has room: an event-log outage alone keeps
        the pod in its Service (its impressions spool), a full spool does not."""
        triton_ok = await state["triton"].ready()
        try:  # reported, not required; a database that hangs must not hold the probe
            store_ok = await asyncio.wait_for(run_in_threadpool(events.ping), timeout=0.5)
        except TimeoutError:
            store_ok = False
        spool_ok = not spool.is_full()
        body = {"ready": triton_ok and spool_ok, "triton": triton_ok, "event_log": store_ok, "spool": spool_ok}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    if settings.metrics_port is None:

        @app.get(
            "/metrics",
            include_in_schema=not keys_required,
            response_class=PlainTextResponse,
            responses={401: {"description": "Missing or invalid API key (when keys are configured)"}},
        )
        async def prometheus() -> Response:
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _Guard:
    """ASGI middleware for ``/v1/`` (and ``/metrics`` when API keys are set): API key (401),
    JSON content type on POST (415), body size (413), request latency.

    The body is read here, bounded by ``max_body_bytes`` whether or not the client sent a
    Content-Length, and handed on unchanged; a refused request never reaches a handler.
    Requiring ``application/json`` also keeps cross-site HTML forms (``text/plain``,
    form-encoded) from reaching the API without a CORS preflight.
    """

    def __init__(self, app: ASGIApp, settings: ApiSettings, metrics: _Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and (
            scope["path"].startswith("/v1/")
            or (scope["path"] == "/metrics" and bool(self.settings.api_keys) and self.settings.metrics_port is None)
        )
        if not guarded:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope.setdefault("state", {})["started"] = started
        headers = dict(scope["headers"])
        limit = self.settings.max_body_bytes
        if self.settings.api_keys and not _authorized(headers.get(b"authorization", b""), self.settings.api_keys):
            self.metrics.errors.labels("unauthorized").inc()
            message = "missing or invalid API key (Authorization: Bearer <key>)"
            refusal = _error(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})
            await refusal(scope, receive, send)
            return
        if scope["method"] == "POST" and not _is_json(headers.get(b"content-type", b"")):
            self.metrics.errors.labels("media_type").inc()
            await _error(415, "unsupported_media_type", "send the body as Content-Type: application/json")(
                scope, receive, send
            )
            return
        length = headers.get(b"content-length", b"")
        body = b"" if not (length.isdigit() and int(length) > limit) else None
        more = body is not None
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")  # type: ignore[operator]
            more = message.get("more_body", False) and len(body) <= limit  # type: ignore[arg-type]
        if body is None or len(body) > limit:
            self.metrics.errors.labels("too_large").inc()
            await _error(413, "too_large", f"request body over {limit} bytes")(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
        self.metrics.latency.labels(scope["path"]).observe(time.perf_counter() - started)


def _caller(request: Request) -> str:
    """Who sent ``request``, for keying its request ids: a digest of its Authorization header."""
    return hashlib.sha256(request.headers.get("authorization", "").encode("latin-1", "replace")).hexdigest()[:16]


def _is_json(content_type: bytes) -> bool:
    """Whether a Content-Type header names JSON (``application/json``, parameters allowed)."""
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for a handler that validates its own raw body (``decode_score_request``)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _publish_body_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the JSON schemas that ``_json_body`` refers to to the app's OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _authorized(header: bytes, keys: tuple[str, ...]) -> bool:
    """Whether ``Authorization: Bearer <key>`` names one of ``keys``; any malformed header is not."""
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return False
    return any(hmac.compare_digest(token.strip(), key.encode()) for key in keys)
