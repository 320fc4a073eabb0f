"""The score API's front door: an ASGI middleware for API keys, content type, body size and latency."""

from __future__ import annotations

import hmac
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ctr.serving.api_metrics import ApiMetrics
from ctr.serving.api_schema import error_response
from ctr.serving.api_settings import ApiSettings


class Guard:
    """ASGI middleware for ``/v1/`` (and ``/metrics`` when API keys are set): API key (401),
    JSON content type on POST (415), body size (413), request latency.

    The body is read here, bounded by ``max_body_bytes`` whether or not the client sent a
    Content-Length, and handed on unchanged; a refused request never reaches a handler.
    Requiring ``application/json`` also keeps cross-site HTML forms (``text/plain``,
    form-encoded) from reaching the API without a CORS preflight.
    """

    def __init__(self, app: ASGIApp, settings: ApiSettings, metrics: ApiMetrics) -> None:
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
            text = "missing or invalid API key (Authorization: Bearer <key>)"
            refusal = error_response(401, "unauthorized", text, {"WWW-Authenticate": "Bearer"})
            await refusal(scope, receive, send)
            return
        if scope["method"] == "POST" and not _is_json(headers.get(b"content-type", b"")):
            self.metrics.errors.labels("media_type").inc()
            await error_response(415, "unsupported_media_type", "send the body as Content-Type: application/json")(
                scope, receive, send
            )
            return
        length = headers.get(b"content-length", b"")
        declared_too_large = length.isdigit() and int(length) > limit
        body = b""
        more = not declared_too_large
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += bytes(message.get("body", b""))
            more = bool(message.get("more_body", False)) and len(body) <= limit
        if declared_too_large or len(body) > limit:
            self.metrics.errors.labels("too_large").inc()
            await error_response(413, "too_large", f"request body over {limit} bytes")(scope, receive, send)
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


def _is_json(content_type: bytes) -> bool:
    """Whether a Content-Type header names JSON (``application/json``, parameters allowed)."""
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def _authorized(header: bytes, keys: tuple[str, ...]) -> bool:
    """Whether ``Authorization: Bearer <key>`` names one of ``keys``; any malformed header is not."""
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return False
    return any(hmac.compare_digest(token.strip(), key.encode()) for key in keys)
