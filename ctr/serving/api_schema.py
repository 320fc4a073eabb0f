"""The score API's answers: response models, the error body, and the OpenAPI document.

Errors have one shape whatever the status: ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``.
The handlers validate their raw bodies themselves (``ctr.serving.request``), so the request
schemas are published into the OpenAPI document here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel


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


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": [], "msg": message, "type": kind}]}, status_code=status, headers=headers)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for a handler that validates its own raw body (``decode_score_request``)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def publish_body_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the JSON schemas that ``json_body`` refers to to the app's OpenAPI document."""

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

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
