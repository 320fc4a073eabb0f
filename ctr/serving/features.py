"""Request features: their schema (part of the OpenAPI spec) and raw arrays for Triton.

Feature names are the Criteo columns: ``I1..I13`` (JSON integers, or null) and ``C1..C26``
(the 32-bit hash as 1-8 hex characters, or null); any other name is rejected with its path.
Context features are shared by every candidate; a candidate's own features (including an
explicit null) override them; absent features are missing values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, create_model

from ctr.schema import DENSE_COLUMNS, N_DENSE, N_SPARSE, SPARSE_COLUMNS

#: Largest integer JSON carries exactly (2^53 - 1); counts beyond it are not plausible.
JSON_SAFE_INT = 2**53 - 1
HexHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{1,8}$")]


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
_DENSE_INDEX = {name: i for i, name in enumerate(DENSE_COLUMNS)}
_SPARSE_INDEX = {name: j for j, name in enumerate(SPARSE_COLUMNS)}

_fields: dict[str, Any] = {
    name: (Count | None, Field(default=None, description="integer count")) for name in DENSE_COLUMNS
}
_fields |= {name: (HexHash | None, Field(default=None, description="32-bit hash, hex")) for name in SPARSE_COLUMNS}
Features: type[BaseModel] = create_model(
    "Features", __config__=ConfigDict(extra="forbid"), __doc__="Criteo features; absent = missing.", **_fields
)


def present(features: BaseModel) -> dict[str, Any]:
    """The features a request actually set (explicit nulls included)."""
    values = features.__dict__
    return {name: values[name] for name in features.model_fields_set}


def _fill(dense: list[float], sparse: list[int], features: Mapping[str, Any]) -> None:
    for name, value in features.items():
        i = _DENSE_INDEX.get(name)
        if i is not None:
            dense[i] = math.nan if value is None else value
        else:
            sparse[_SPARSE_INDEX[name]] = -1 if value is None else int(value, 16)


def encode(context: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Raw arrays for validated features (see ``Features``).

    Returns dense float64 ``(n, 13)`` (NaN = missing; exact integers for the event log) and
    sparse int64 ``(n, 26)`` (-1 = missing).
    """
    base_dense, base_sparse = [math.nan] * N_DENSE, [-1] * N_SPARSE
    _fill(base_dense, base_sparse, context)
    dense_rows, sparse_rows = [], []
    for features in candidates:
        dense, sparse = base_dense.copy(), base_sparse.copy()
        _fill(dense, sparse, features)
        dense_rows.append(dense)
        sparse_rows.append(sparse)
    return (
        np.array(dense_rows, dtype=np.float64).reshape(-1, N_DENSE),
        np.array(sparse_rows, dtype=np.int64).reshape(-1, N_SPARSE),
    )


def feature_columns(dense: np.ndarray, sparse: np.ndarray) -> list[dict[str, int | None]]:
    """Per row: ``{"i1": …, "c26": …}`` raw values for the event log (None where missing)."""
    missing = np.isnan(dense).tolist()
    d_int = np.where(np.isnan(dense), 0, dense).astype(np.int64).tolist()
    s_list = sparse.tolist()
    rows = []
    for r in range(dense.shape[0]):
        row: dict[str, int | None] = {f"i{i + 1}": (None if missing[r][i] else d_int[r][i]) for i in range(N_DENSE)}
        row.update({f"c{j + 1}": (None if s_list[r][j] < 0 else s_list[r][j]) for j in range(N_SPARSE)})
        rows.append(row)
    return rows
