"""The score API's handlers: score, clicks, health, readiness, metrics.

Each reads the process's ``ApiState`` (``request.app.state.ctr``, set by ``create_app``).
``POST /v1/score``: validate → (repeat of a recent ``request_id``? its first answer) → Triton
→ rank → impression ids → durable (log or spool) → answer. ``POST /v1/clicks``: validate →
wait up to the deadline for spooled impressions → record, idempotently.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ctr.events.spool import Spool, SpoolFull
from ctr.events.store import ClickCounts, ContentRefused, EventStore, StoreUnavailable
from ctr.ids import uuid7
from ctr.serving.api_metrics import ApiMetrics
from ctr.serving.api_schema import error_response
from ctr.serving.api_settings import ApiSettings
from ctr.serving.durable_sink import Clicks, DurableSink
from ctr.serving.exploration import Exploration
from ctr.serving.idempotency import RecentAnswers
from ctr.serving.request import ScoreInput, decode_click_request, decode_score_request
from ctr.serving.request_features import feature_columns
from ctr.serving.triton_client import TritonScorer, TritonUnavailable
from ctr.timeutil import to_us, utcnow

log = logging.getLogger(__name__)


@dataclass
class ApiState:
    """What the handlers share in one process; ``triton`` is connected at start-up."""

    settings: ApiSettings
    metrics: ApiMetrics
    events: EventStore
    spool: Spool
    answers: RecentAnswers
    sink: DurableSink
    triton: TritonScorer | None = None
    policy: Exploration = field(default_factory=Exploration)  # which candidates are shown
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def scorer(self) -> TritonScorer:
        assert self.triton is not None, "the app has not started"
        return self.triton


def api_state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.ctr)


async def invalid(_request: Request, exc: Exception) -> JSONResponse:
    """422 with every field error, for requests that fail validation."""
    api_state(_request).metrics.errors.labels("invalid").inc()
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


async def score(request: Request) -> Response:
    state = api_state(request)
    body = decode_score_request(await request.body())
    state.metrics.stages.labels("decode").observe(time.perf_counter() - request.state.started)
    n = len(body.ad_ids)
    if n > state.settings.max_candidates:
        msg = f"at most {state.settings.max_candidates} candidates, got {n}"
        raise RequestValidationError([{"loc": ("body", "candidates"), "type": "too_long", "msg": msg}])
    # One client's request ids are not another's: the key includes who asked (the API key).
    key = None if body.request_id is None else f"{_caller(request)}:{body.request_id}"
    if key is not None:
        earlier = await state.answers.claim(key)
        if earlier is not None:
            state.metrics.repeats.inc()
            return Response(earlier, media_type="application/json")
    try:
        answer = await _score(state, body)
    except BaseException:
        if key is not None:
            state.answers.forget(key)
        raise
    if key is not None:
        if answer.status_code == 200:
            state.answers.resolve(key, bytes(answer.body))
        else:
            state.answers.forget(key)
    return answer


async def _score(state: ApiState, body: ScoreInput) -> Response:
    dense, sparse, metrics = body.dense, body.sparse, state.metrics
    metrics.candidates.observe(len(body.ad_ids))
    t0 = time.perf_counter()
    try:
        pctr, version = await state.scorer().score(dense, sparse)
    except TritonUnavailable as exc:
        metrics.errors.labels("triton").inc()
        return error_response(503, "triton_unavailable", f"scoring backend unavailable: {exc}", {"Retry-After": "1"})
    t1 = time.perf_counter()
    metrics.triton.observe(t1 - t0)
    metrics.stages.labels("triton").observe(t1 - t0)
    order, propensity = state.policy.rank(pctr, body.top_k, state.rng)
    request_id = body.request_id or uuid7()
    served_at = to_us(body.event_time or utcnow())
    features = feature_columns(dense[order], sparse[order])
    results, rows = [], []
    for rank, k in enumerate(order.tolist()):
        impression_id, p = uuid7(), float(pctr[k])
        results.append({"ad_id": body.ad_ids[k], "impression_id": impression_id, "pctr": p})
        rows.append(
            {
                "impression_id": impression_id,
                "request_id": request_id,
                "ad_id": body.ad_ids[k],
                "served_at_us": served_at,
                "model_version": version,
                "pctr": p,
                "propensity": float(propensity[rank]),
                **features[rank],
            }
        )
    t2 = time.perf_counter()
    metrics.stages.labels("rank").observe(t2 - t1)
    try:
        await state.sink.write(rows)
    except SpoolFull as exc:
        metrics.errors.labels("spool_full").inc()
        log.error("%s; answering 503", exc)
        return error_response(503, "spool_full", "the impression log is full; retry later", {"Retry-After": "5"})
    metrics.stages.labels("store").observe(time.perf_counter() - t2)
    answer = {"request_id": request_id, "model_version": version, "results": results}
    return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")


async def record_clicks(request: Request) -> Any:
    state = api_state(request)
    body = decode_click_request(await request.body())
    # Impressions still in the spool would look unknown: give the replay until the deadline.
    waited_until = time.monotonic() + state.settings.deadline_ms / 1000
    while state.spool.holds_batches() and time.monotonic() < waited_until:
        await asyncio.sleep(0.01)
    if state.spool.holds_batches():
        state.metrics.errors.labels("store").inc()
        message = "impressions are still being written to the event log; retry"
        return error_response(503, "store_unavailable", message, {"Retry-After": "1"})
    try:
        counts = await state.sink.write(Clicks(body.impression_ids, to_us(body.clicked_at or utcnow())))
    except StoreUnavailable as exc:
        state.metrics.errors.labels("store").inc()
        log.warning("clicks not recorded: %s", exc)
        return error_response(503, "store_unavailable", "the event log is unavailable; retry", {"Retry-After": "5"})
    except ContentRefused as exc:
        raise RequestValidationError(
            [{"loc": ("body", "impression_ids"), "type": "refused", "msg": str(exc)}]
        ) from None
    assert isinstance(counts, ClickCounts)
    return {
        "accepted": counts.accepted,
        "duplicate": counts.duplicate,
        "unknown": counts.unknown,
        "out_of_window": counts.out_of_window,
    }


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """Ready while Triton answers and the spool has room: an event-log outage alone keeps the
    pod in its Service (its impressions spool), a full spool does not."""
    state = api_state(request)
    triton_ok = await state.scorer().ready()
    try:  # reported, not required; a database that hangs must not hold the probe
        store_ok = await asyncio.wait_for(run_in_threadpool(state.events.ping), timeout=0.5)
    except TimeoutError:
        store_ok = False
    spool_ok = not state.spool.is_full()
    body = {"ready": triton_ok and spool_ok, "triton": triton_ok, "event_log": store_ok, "spool": spool_ok}
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


async def prometheus(request: Request) -> Response:
    return Response(generate_latest(api_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _caller(request: Request) -> str:
    """Who sent ``request``, for keying its request ids: a digest of its Authorization header."""
    return hashlib.sha256(request.headers.get("authorization", "").encode("latin-1", "replace")).hexdigest()[:16]
