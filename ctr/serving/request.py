"""The bodies of ``POST /v1/score`` and ``POST /v1/clicks``: schemas, and decoding a score request.

Every string a client sends is refused (422, naming the field) when it holds a NUL or a lone
surrogate (``Text``): such a value cannot be stored in PostgreSQL text or encoded as UTF-8.
Times need a timezone, must be ISO 8601 strings (an integer is refused) and lie in
``[TIME_MIN, TIME_MAX)``.

``ScoreRequest`` (pydantic) is the contract: the OpenAPI spec and every 422 come from it.
``decode_score_request`` first tries msgspec structs built from the same field lists, which
accept a subset of what ``ScoreRequest`` accepts; a body they refuse goes through
``ScoreRequest``, which either raises the 422 (with the offending field's path) or accepts
it, in which case its normalised form (``3.0`` → ``3``, any datetime form → ISO 8601) is
decoded again. Both paths give the same ``ScoreInput``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
from fastapi.exceptions import RequestValidationError
from numpy.typing import NDArray
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationError

from ctr.serving.request_features import Features, FeatureStruct, NotHexError, encode, whole_number

M = TypeVar("M", bound=BaseModel)

MAX_AD_ID = 256
MAX_REQUEST_ID = 128
MAX_IMPRESSION_ID = 36  # a UUIDv7 in its canonical form
MAX_CLICK_IDS = 10_000
TIME_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(2100, 1, 1, tzinfo=UTC)


def storable_text(value: str) -> str:
    """``value`` if every database and UTF-8 can hold it; ``ValueError`` for a NUL or a lone surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (a lone surrogate is not)") from None
    return value


def event_instant(value: Any) -> Any:
    """Refuse what is not an ISO 8601 string or a datetime (pydantic would read ``0`` as 1970)."""
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 string with a timezone, e.g. 2026-12-01T12:00:00Z")
    return value


def sane_instant(value: datetime | None) -> datetime | None:
    """``value`` if it has a timezone and lies in ``[TIME_MIN, TIME_MAX)``."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("needs a timezone (use Z for UTC)")
    if not TIME_MIN.year <= value.year < TIME_MAX.year:  # the year as written, as the spec's pattern says
        raise ValueError(f"must lie in the years {TIME_MIN.year} to {TIME_MAX.year - 1}")
    return value


# The spec says what ``storable_text`` checks, so clients and fuzzers know (UTF-8 JSON has no lone surrogates).
Text = Annotated[StrictStr, AfterValidator(storable_text), Field(json_schema_extra={"pattern": "^[^\\x00]*$"})]
Instant = Annotated[
    datetime | None,
    BeforeValidator(event_instant),
    AfterValidator(sane_instant),
    Field(json_schema_extra={"pattern": f"^{str(TIME_MIN.year)[:2]}[0-9]{{2}}-"}),
]


if TYPE_CHECKING:
    FeaturesModel = BaseModel  # the model pydantic builds at import (ctr.serving.request_features)
else:
    FeaturesModel = Features


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ad_id: Text = Field(min_length=1, max_length=MAX_AD_ID)
    features: FeaturesModel = Field(default_factory=Features)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REQUEST_ID,
        description="Idempotency key: a repeat within the API's window gets the first answer, and logs nothing.",
    )
    event_time: Instant = Field(default=None, description="The ad server's event time (UTC); default now.")
    context: FeaturesModel = Field(default_factory=Features)
    candidates: list[Candidate] = Field(min_length=1)
    top_k: Annotated[int, Field(ge=1), BeforeValidator(whole_number)] | None = None


class _FastCandidate(msgspec.Struct, forbid_unknown_fields=True):
    ad_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_AD_ID)]
    features: FeatureStruct = msgspec.field(default_factory=FeatureStruct)  # type: ignore[valid-type]  # built at import


class _FastScoreRequest(msgspec.Struct, forbid_unknown_fields=True):
    candidates: Annotated[list[_FastCandidate], msgspec.Meta(min_length=1)]
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_REQUEST_ID)] | None = None
    event_time: datetime | None = None
    context: FeatureStruct = msgspec.field(default_factory=FeatureStruct)  # type: ignore[valid-type]  # built at import
    top_k: Annotated[int, msgspec.Meta(ge=1)] | None = None


_decoder = msgspec.json.Decoder(_FastScoreRequest)


class ClickRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    impression_ids: list[Annotated[Text, Field(min_length=1, max_length=MAX_IMPRESSION_ID)]] = Field(
        min_length=1, max_length=MAX_CLICK_IDS
    )
    clicked_at: Instant = Field(default=None, description="When the clicks happened (UTC); default now.")


@dataclass(frozen=True)
class ScoreInput:
    """A validated score request: ``dense`` float64 (n, 13), NaN = missing; ``sparse`` int64 (n, 26), -1 = missing."""

    request_id: str | None
    event_time: datetime | None
    top_k: int | None
    ad_ids: list[str]
    dense: NDArray[Any]
    sparse: NDArray[Any]


def decode_score_request(raw: bytes) -> ScoreInput:
    """Validate and encode a body; ``RequestValidationError`` (loc starting at ``body``) if invalid."""
    # Without escapes, no string can hold a NUL or a lone surrogate (raw control characters and
    # invalid UTF-8 are refused by the parser): only then can the fast path skip those checks.
    if b"\\u" not in raw:
        try:
            body = _decoder.decode(raw)
            if body.event_time is None or (
                body.event_time.tzinfo is not None and TIME_MIN <= body.event_time < TIME_MAX
            ):
                return _score_input(body)
        except (msgspec.DecodeError, NotHexError):  # DecodeError includes msgspec's ValidationError
            pass
    # The contract decides and explains; what it accepts, normalised, the fast path takes.
    return _score_input(_decoder.decode(_validate(raw, ScoreRequest).model_dump_json(exclude_unset=True)))


def _score_input(body: _FastScoreRequest) -> ScoreInput:
    dense, sparse = encode(body.context, [c.features for c in body.candidates])
    ad_ids = [c.ad_id for c in body.candidates]
    return ScoreInput(body.request_id, body.event_time, body.top_k, ad_ids, dense, sparse)


def decode_click_request(raw: bytes) -> ClickRequest:
    """``ClickRequest`` for a body; ``RequestValidationError`` (loc starting at ``body``) if invalid."""
    return _validate(raw, ClickRequest)


def _validate(raw: bytes, model: type[M]) -> M:
    """``model`` for ``raw``, or FastAPI's 422 with ``loc`` starting at ``body`` (undecodable bytes included)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        ) from None
