"""Request features → raw arrays for Triton, with errors that name the offending field.

Feature names are the Criteo columns ``I1..I13`` (JSON integers or null) and ``C1..C26``
(the 32-bit hash as 1-8 hex characters, or null). Context features are shared by every
candidate; a candidate's own features override them; absent features are missing values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ctr.schema import DENSE_COLUMNS, N_DENSE, N_SPARSE, SPARSE_COLUMNS

_DENSE_INDEX = {name: i for i, name in enumerate(DENSE_COLUMNS)}
_SPARSE_INDEX = {name: j for j, name in enumerate(SPARSE_COLUMNS)}
_HEX = frozenset("0123456789abcdefABCDEF")
INT64_MAX = 2**63 - 1
Loc = tuple[str | int, ...]


class FeatureErrors(Exception):
    """Validation errors as FastAPI reports them: ``[{"loc", "msg", "type"}, ...]``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def _fill(dense: np.ndarray, sparse: np.ndarray, features: Mapping[str, Any], loc: Loc,
          errors: list[dict[str, Any]]) -> None:
    for name, value in features.items():
        if name in _DENSE_INDEX:
            i = _DENSE_INDEX[name]
            if value is None:
                dense[i] = np.nan
            elif isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX <= value <= INT64_MAX:
                dense[i] = value
            else:
                errors.append({"loc": [*loc, name], "msg": "must be an integer or null", "type": "int_type"})
        elif name in _SPARSE_INDEX:
            j = _SPARSE_INDEX[name]
            if value is None:
                sparse[j] = -1
            elif isinstance(value, str) and 1 <= len(value) <= 8 and _HEX.issuperset(value):
                sparse[j] = int(value, 16)
            else:
                errors.append({"loc": [*loc, name], "msg": "must be a 32-bit hash as 1-8 hex characters, or null",
                               "type": "hex_type"})
        else:
            errors.append({"loc": [*loc, name], "msg": "unknown feature; expected I1..I13 or C1..C26",
                           "type": "unknown_feature"})


def encode(
    context: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """Raw arrays for ``n`` candidates; ``FeatureErrors`` listing every invalid field.

    Returns dense float64 ``(n, 13)`` (NaN = missing; exact integers for the event log) and
    sparse int64 ``(n, 26)`` (-1 = missing).
    """
    errors: list[dict[str, Any]] = []
    base_dense = np.full(N_DENSE, np.nan, dtype=np.float64)
    base_sparse = np.full(N_SPARSE, -1, dtype=np.int64)
    _fill(base_dense, base_sparse, context, ("body", "context"), errors)
    n = len(candidates)
    dense = np.broadcast_to(base_dense, (n, N_DENSE)).copy()
    sparse = np.broadcast_to(base_sparse, (n, N_SPARSE)).copy()
    for k, features in enumerate(candidates):
        if features:
            _fill(dense[k], sparse[k], features, ("body", "candidates", k, "features"), errors)
    if errors:
        raise FeatureErrors(errors)
    return dense, sparse


def feature_columns(dense: np.ndarray, sparse: np.ndarray) -> list[dict[str, int | None]]:
    """Per row: ``{"i1": …, "c26": …}`` raw values for the event log (None where missing)."""
    rows = []
    d_missing = np.isnan(dense)
    d_int = np.where(d_missing, 0, dense).astype(np.int64).tolist()
    s_list = sparse.tolist()
    dm = d_missing.tolist()
    for r in range(dense.shape[0]):
        row: dict[str, int | None] = {f"i{i + 1}": (None if dm[r][i] else d_int[r][i]) for i in range(N_DENSE)}
        row.update({f"c{j + 1}": (None if s_list[r][j] < 0 else s_list[r][j]) for j in range(N_SPARSE)})
        rows.append(row)
    return rows
