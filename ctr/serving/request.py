"""The body of ``POST /v1/score``: its schema, and decoding it into arrays for Triton.

``ScoreRequest`` (pydantic) is the contract: the OpenAPI spec and every 422 come from it.
``decode_score_request`` first tries msgspec structs built from the same field lists, which
accept a subset of what ``ScoreRequest`` accepts; a body they refuse goes through
``ScoreRequest``, which either raises the 422 (with the offending field's path) or accepts
it, in which case its normalised form (``3.0`` → ``3``, any datetime form → ISO 8601) is
decoded again. Both paths give the same ``ScoreInput``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationError

from ctr.serving.features import Features, FeatureStruct, NotHexError, encode, whole_number

MAX_AD_ID = 256
MAX_REQUEST_ID = 128


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ad_id: StrictStr = Field(min_length=1, max_length=MAX_AD_ID)
    features: Features = Field(default_factory=Features)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: StrictStr | None = Field(default=None, min_length=1, max_length=MAX_REQUEST_ID)
    event_time: datetime | None = Field(default=None, description="The ad server's event time (UTC); default now.")
    context: Features = Field(default_factory=Features)
    candidates: list[Candidate] = Field(min_length=1)
    top_k: Annotated[int, Field(ge=1), BeforeValidator(whole_number)] | None = None


class _FastCandidate(msgspec.Struct, forbid_unknown_fields=True):
    ad_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_AD_ID)]
    features: FeatureStruct = msgspec.field(default_factory=FeatureStruct)  # type: ignore[valid-type]


class _FastScoreRequest(msgspec.Struct, forbid_unknown_fields=True):
    candidates: Annotated[list[_FastCandidate], msgspec.Meta(min_length=1)]
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_REQUEST_ID)] | None = None
    event_time: datetime | None = None
    context: FeatureStruct = msgspec.field(default_factory=FeatureStruct)  # type: ignore[valid-type]
    top_k: Annotated[int, msgspec.Meta(ge=1)] | None = None


_decoder = msgspec.json.Decoder(_FastScoreRequest)


@dataclass(frozen=True)
class ScoreInput:
    """A validated score request: ``dense`` float64 (n, 13), NaN = missing; ``sparse`` int64 (n, 26), -1 = missing."""

    request_id: str | None
    event_time: datetime | None
    top_k: int | None
    ad_ids: list[str]
    dense: np.ndarray
    sparse: np.ndarray


def decode_score_request(raw: bytes) -> ScoreInput:
    """Validate and encode a body; ``RequestValidationError`` (loc starting at ``body``) if invalid."""
    if b"\\u0000" not in raw:  # a NUL in a hash would pass as padding in ``encode``
        try:
            return _score_input(_decoder.decode(raw))
        except (msgspec.DecodeError, NotHexError):  # DecodeError includes msgspec's ValidationError
            pass
    # The contract decides and explains; what it accepts, normalised, the fast path takes.
    return _score_input(_decoder.decode(_validate(raw).model_dump_json(exclude_unset=True)))


def _score_input(body: _FastScoreRequest) -> ScoreInput:
    dense, sparse = encode(body.context, [c.features for c in body.candidates])
    ad_ids = [c.ad_id for c in body.candidates]
    return ScoreInput(body.request_id, body.event_time, body.top_k, ad_ids, dense, sparse)


def _validate(raw: bytes) -> ScoreRequest:
    """``ScoreRequest`` for ``raw``, or FastAPI's 422 with ``loc`` starting at ``body``."""
    try:
        return ScoreRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        ) from None
