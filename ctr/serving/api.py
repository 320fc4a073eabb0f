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

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from prometheus_client import start_http_server

from ctr.events.spool import Spool
from ctr.events.store import ClickWindow, EventStore
from ctr.serving import handlers
from ctr.serving.api_guard import Guard
from ctr.serving.api_metrics import ApiMetrics
from ctr.serving.api_schema import ClickResponse, ScoreResponse, json_body, publish_body_schemas
from ctr.serving.api_settings import ApiSettings
from ctr.serving.durable_sink import DurableSink
from ctr.serving.handlers import ApiState
from ctr.serving.idempotency import RecentAnswers
from ctr.serving.request import ClickRequest, ScoreRequest
from ctr.serving.triton_client import TritonScorer

__all__ = ["ApiSettings", "create_app"]

_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    413: {"description": "Body too large"},
    415: {"description": "Body is not application/json"},
}


def create_app(settings: ApiSettings, store: EventStore | None = None) -> FastAPI:
    """The FastAPI application (one per process; ``store`` may be given for tests).

    The event store and the spool are built here, not at start-up: a malformed database URL or
    a spool directory that cannot be created is an ``InputError`` before a server runs.
    """
    metrics = ApiMetrics()
    events = store or EventStore(
        settings.db_url,
        click_window=ClickWindow(max_delay=timedelta(seconds=settings.click_max_delay_s)),
        lock_timeout_ms=max(settings.deadline_ms // 4, 1),
        statement_timeout_ms=max(settings.deadline_ms // 2, 1),
    )
    spool = Spool(settings.spool_dir, settings.spool_max_bytes)
    sink = DurableSink(events, spool, metrics, settings.db_url, migrate=settings.migrate, own_store=store is None)
    state = ApiState(
        settings, metrics, events, spool, RecentAnswers(settings.idempotency_window_s), sink, policy=settings.policy()
    )
    keys_required = bool(settings.api_keys)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await sink.start()
        if settings.metrics_port is not None:
            start_http_server(settings.metrics_port, addr="0.0.0.0", registry=metrics.registry)
        state.triton = TritonScorer(settings.triton, settings.deadline_ms / 1000)
        # What start-up left alive (modules, schemas, clients) leaves the collector's generations:
        # full collections then scan request garbage only (over the whole heap they took ~70 ms
        # here, a stall for every request in flight).
        gc.collect()
        gc.freeze()
        # The event loop and the writer thread share the GIL: hand it over within 1 ms rather
        # than the default 5 ms, which a commit waiting on a busy loop otherwise pays.
        sys.setswitchinterval(0.001)
        yield
        await sink.stop()
        await state.scorer().close()

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
    app.state.ctr = state
    publish_body_schemas(app, [ScoreRequest, ClickRequest])
    app.add_middleware(Guard, settings=settings, metrics=metrics)
    app.add_exception_handler(RequestValidationError, handlers.invalid)
    _routes(app, keys_required, metrics_here=settings.metrics_port is None)
    return app


def _routes(app: FastAPI, keys_required: bool, metrics_here: bool) -> None:
    app.add_api_route(
        "/v1/score",
        handlers.score,
        methods=["POST"],
        response_model=ScoreResponse,
        openapi_extra=json_body(ScoreRequest),
        responses={
            **_REFUSALS,
            422: {"description": "Invalid request; `detail[].loc` names the field"},
            503: {"description": "Triton unavailable or spool full; retry after `Retry-After` seconds"},
        },
    )
    app.add_api_route(
        "/v1/clicks",
        handlers.record_clicks,
        methods=["POST"],
        response_model=ClickResponse,
        openapi_extra=json_body(ClickRequest),
        responses={
            **_REFUSALS,
            422: {"description": "Invalid request"},
            503: {"description": "Event log unavailable; retry after `Retry-After` seconds"},
        },
    )
    app.add_api_route("/healthz", handlers.healthz, methods=["GET"])
    app.add_api_route(
        "/readyz",
        handlers.readyz,
        methods=["GET"],
        responses={503: {"description": "Not ready: Triton unavailable or the spool full"}},
    )
    if metrics_here:
        app.add_api_route(
            "/metrics",
            handlers.prometheus,
            methods=["GET"],
            include_in_schema=not keys_required,
            response_class=PlainTextResponse,
            responses={401: {"description": "Missing or invalid API key (when keys are configured)"}},
        )
