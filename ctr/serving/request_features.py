"""Request features: their schema (part of the OpenAPI spec) and raw arrays for Triton.

Feature names are the Criteo columns: ``I1..I13`` (JSON integers, or null) and ``C1..C26``
(the 32-bit hash as 1-8 hex characters, or null); any other name is rejected with its path.
Context features are shared by every candidate; a candidate's own features (including an
explicit null) override them; absent features are missing values.

Two renderings of one schema: ``Features`` (pydantic) is the documented, canonical one —
the OpenAPI spec and every error message come from it; ``FeatureStruct`` (msgspec) decodes
the same JSON 4-7× faster on the hot path and accepts a subset of what ``Features``
accepts (see ``ctr.serving.request``). ``encode`` turns decoded structs into arrays with
numpy, without a Python loop over the 39 features of each candidate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from typing import Annotated, Any

import msgspec
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, create_model

from ctr.events.tables import DENSE_DB, SPARSE_DB
from ctr.schema import DENSE_COLUMNS, N_DENSE, N_SPARSE, SPARSE_COLUMNS

N_FEATURES = N_DENSE + N_SPARSE
_EVENT_LOG_COLUMNS = (*DENSE_DB, *SPARSE_DB)

#: Largest integer JSON carries exactly (2^53 - 1); counts beyond it are not plausible.
JSON_SAFE_INT = 2**53 - 1
HEX_HASH_PATTERN = r"^[0-9a-fA-F]{1,8}$"
HexHash = Annotated[str, StringConstraints(pattern=HEX_HASH_PATTERN)]


def whole_number(value: Any) -> Any:
    """JSON Schema's ``integer`` admits ``3.0``; booleans and strings are refused."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


Count = Annotated[int, Field(ge=-JSON_SAFE_INT, le=JSON_SAFE_INT), BeforeValidator(whole_number)]

_fields: dict[str, Any] = {
    name: (Count | None, Field(default=None, description="integer count")) for name in DENSE_COLUMNS
}
_fields |= {name: (HexHash | None, Field(default=None, description="32-bit hash, hex")) for name in SPARSE_COLUMNS}
Features: type[BaseModel] = create_model(
    "Features", __config__=ConfigDict(extra="forbid"), __doc__="Criteo features; absent = missing.", **_fields
)

#: What the fast decoder leaves in a field the JSON did not set (null decodes to None).
#: Neither can come from valid JSON: integers are finite, a hash has 1-8 characters.
ABSENT_DENSE = math.inf
ABSENT_SPARSE = ""
_FastCount = Annotated[int, msgspec.Meta(ge=-JSON_SAFE_INT, le=JSON_SAFE_INT)]
# The hex check of C values is vectorised in ``encode`` (a regex per value cost ~1 ms per request).
_FastHash = Annotated[str, msgspec.Meta(min_length=1, max_length=8)]
FeatureStruct = msgspec.defstruct(
    "FeatureStruct",
    [(name, _FastCount | None, ABSENT_DENSE) for name in DENSE_COLUMNS]
    + [(name, _FastHash | None, ABSENT_SPARSE) for name in SPARSE_COLUMNS],
    forbid_unknown_fields=True,
)


class NotHexError(ValueError):
    """A C value of a ``FeatureStruct`` is not 1-8 hex characters."""


_HEX_DIGIT = np.zeros(256, dtype=np.uint8)
_NOT_HEX = np.ones(256, dtype=bool)
_NOT_HEX[0] = False  # padding
for _k, _c in enumerate("0123456789abcdef"):
    for _byte in {ord(_c), ord(_c.upper())}:
        _HEX_DIGIT[_byte], _NOT_HEX[_byte] = _k, False
_NULL = np.frombuffer(b"None\0\0\0\0", dtype=np.uint64)[0]  # how numpy writes None as 8 bytes


def _sparse_values(values: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """(int64 values, absent bool) for an object array of decoded C values (str, None or "").

    Values are read as 8 NUL-padded bytes: the absent "" is all padding, None (null,
    becomes -1) reads "None". A value with a byte that is not a hex digit raises
    ``NotHexError``, as does a non-ASCII one. A NUL character reads as padding: a caller
    must screen out strings that contain one.
    """
    try:
        chars = values.astype("S8")
    except UnicodeEncodeError:
        raise NotHexError("non-ASCII hash") from None
    words, octets = chars.view(np.uint64), chars.view(np.uint8).reshape(*chars.shape, 8)
    null = words == _NULL
    if null.any():  # the (invalid) string "None" reads the same
        null[null] = [v is None for v in values[null].tolist()]
    if (_NOT_HEX[octets].view(np.uint64).reshape(chars.shape) != 0)[~null].any():
        raise NotHexError("hash with a character that is not a hex digit")
    digits = _HEX_DIGIT[octets]
    packed = np.ascontiguousarray((digits[..., 0::2] << 4) | digits[..., 1::2])  # 8 nibbles → 4 bytes
    left_aligned = packed.view(">u4").reshape(chars.shape).astype(np.int64)  # the hash × 16^(8 - length)
    parsed = left_aligned >> (4 * (8 - np.count_nonzero(octets, axis=2)))
    parsed[null] = -1
    return parsed, words == 0


def encode(context: msgspec.Struct, candidates: Sequence[msgspec.Struct]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Raw arrays for decoded ``FeatureStruct`` values.

    Returns dense float64 ``(n, 13)`` (NaN = missing; exact integers for the event log) and
    sparse int64 ``(n, 26)`` (-1 = missing): each candidate's own value where it set one
    (null included), else the context's, else missing. ``NotHexError`` for a C value that
    is not hex (see ``_sparse_values`` on NUL characters, which it does not detect).
    """
    structs = [context, *candidates]
    values = np.fromiter(
        chain.from_iterable(map(msgspec.structs.astuple, structs)), dtype=object, count=len(structs) * N_FEATURES
    ).reshape(len(structs), N_FEATURES)
    dense = values[:, :N_DENSE].astype(np.float64)  # None → NaN, absent → inf
    sparse, absent = _sparse_values(values[:, N_DENSE:])
    dense[0, np.isinf(dense[0])] = np.nan
    sparse[0, absent[0]] = -1
    dense[1:] = np.where(np.isinf(dense[1:]), dense[0], dense[1:])
    sparse[1:] = np.where(absent[1:], sparse[0], sparse[1:])
    return dense[1:], sparse[1:]


def feature_columns(dense: NDArray[Any], sparse: NDArray[Any]) -> list[dict[str, int | None]]:
    """Per row: ``{"i1": …, "c26": …}`` raw values for the event log (None where missing)."""
    values = np.concatenate([np.where(np.isnan(dense), 0, dense).astype(np.int64), sparse], axis=1).astype(object)
    values[np.concatenate([np.isnan(dense), sparse < 0], axis=1)] = None
    return [dict(zip(_EVENT_LOG_COLUMNS, row, strict=True)) for row in values.tolist()]
