"""``decode_score_request``: the msgspec fast path gives what the pydantic contract gives.

The reference below is written independently of ``ctr.serving.request_features``: it validates with
``ScoreRequest`` (the contract) and fills the arrays value by value.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ctr.schema import DENSE_COLUMNS, N_DENSE, N_SPARSE, SPARSE_COLUMNS
from ctr.serving.request import ClickRequest, ScoreRequest, decode_score_request
from ctr.serving.request_features import feature_columns


def reference(raw: bytes) -> tuple[list[str], np.ndarray, np.ndarray]:
    body = ScoreRequest.model_validate_json(raw)
    dense = np.full((len(body.candidates), N_DENSE), math.nan)
    sparse = np.full((len(body.candidates), N_SPARSE), -1, dtype=np.int64)
    for r, candidate in enumerate(body.candidates):
        for source in (body.context, candidate.features):  # the candidate's own values win
            for name in source.model_fields_set:
                value = getattr(source, name)
                if name in DENSE_COLUMNS:
                    dense[r, DENSE_COLUMNS.index(name)] = math.nan if value is None else value
                else:
                    sparse[r, SPARSE_COLUMNS.index(name)] = -1 if value is None else int(value, 16)
    return [c.ad_id for c in body.candidates], dense, sparse


def random_features(rng: random.Random) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for name in DENSE_COLUMNS:
        kind = rng.random()
        if kind < 0.6:
            features[name] = rng.choice([0, 1, -3, 2**53 - 1, -(2**53 - 1), rng.randrange(10**6)])
        elif kind < 0.7:
            features[name] = None
    for name in SPARSE_COLUMNS:
        kind = rng.random()
        if kind < 0.6:
            digits = rng.randint(1, 8)
            value = "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(digits))
            features[name] = value
        elif kind < 0.7:
            features[name] = None
    return features


def assert_same(raw: bytes) -> None:
    ad_ids, dense, sparse = reference(raw)
    decoded = decode_score_request(raw)
    assert decoded.ad_ids == ad_ids
    np.testing.assert_array_equal(decoded.dense, dense)  # NaN == NaN here
    np.testing.assert_array_equal(decoded.sparse, sparse)


@pytest.mark.parametrize("seed", range(20))
def test_random_requests_decode_as_the_contract_says(seed: int) -> None:
    rng = random.Random(seed)
    body = {
        "context": random_features(rng),
        "candidates": [{"ad_id": f"ad-{k}", "features": random_features(rng)} for k in range(rng.randint(1, 40))],
    }
    assert_same(json.dumps(body).encode())


def test_candidate_values_and_nulls_override_the_context() -> None:
    body = {
        "context": {"I1": 5, "C3": "AbC", "C4": "10"},
        "candidates": [
            {"ad_id": "a", "features": {"I1": None, "C3": "ff"}},
            {"ad_id": "b"},
            {"ad_id": "c", "features": {"C3": None, "I2": -7}},
        ],
    }
    decoded = decode_score_request(json.dumps(body).encode())
    assert math.isnan(decoded.dense[0, 0]) and decoded.dense[1, 0] == 5 and decoded.dense[2, 1] == -7
    assert decoded.sparse[:, 2].tolist() == [0xFF, 0xABC, -1]
    assert decoded.sparse[:, 3].tolist() == [0x10, 0x10, 0x10]
    assert math.isnan(decoded.dense[1, 1]) and decoded.sparse[1, 0] == -1  # set nowhere: missing


@pytest.mark.parametrize(
    "body",
    [
        {"context": {"I1": 3.0}, "candidates": [{"ad_id": "a", "features": {"C26": "0"}}], "top_k": 2.0},
        {"candidates": [{"ad_id": "a\u00e9\ud83d\ude00", "features": {"C1": "ffffffff"}}]},
        {"candidates": [{"ad_id": "a"}], "event_time": "2026-12-01T12:00:00+01:00"},
    ],
)
def test_what_only_the_contract_accepts_is_accepted_the_same(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    assert_same(raw)
    decoded, contract = decode_score_request(raw), ScoreRequest.model_validate_json(raw)
    assert (decoded.top_k, decoded.event_time) == (contract.top_k, contract.event_time)


@pytest.mark.parametrize(
    ("features", "loc"),
    [
        ({"C1": "None"}, ["C1"]),
        ({"C1": "ab\u0000"}, ["C1"]),
        ({"C1": "a\u0000b"}, ["C1"]),
        ({"C2": "é"}, ["C2"]),
        ({"C3": "0x1f"}, ["C3"]),
        ({"C3": "ab\n"}, ["C3"]),
        ({"C4": "123456789"}, ["C4"]),
        ({"C5": ""}, ["C5"]),
        ({"I1": True}, ["I1"]),
        ({"I1": "3"}, ["I1"]),
        ({"I1": 2**53}, ["I1"]),
        ({"I1": 1.5}, ["I1"]),
        ({"X1": 1}, ["X1"]),
    ],
)
def test_invalid_features_get_the_contracts_error_with_the_path(features: dict[str, Any], loc: list[str]) -> None:
    raw = json.dumps({"candidates": [{"ad_id": "a", "features": {"I2": 1}}, {"ad_id": "b", "features": features}]})
    with pytest.raises(RequestValidationError) as caught:
        decode_score_request(raw.encode())
    assert [list(e["loc"]) for e in caught.value.errors()] == [["body", "candidates", 1, "features", *loc]]


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"candidates": []}', ["body", "candidates"]),
        (b'{"candidates": [{"ad_id": ""}]}', ["body", "candidates", 0, "ad_id"]),
        (b'{"candidates": [{"ad_id": "a"}], "top_k": 0}', ["body", "top_k"]),
        (b'{"candidates": [{"ad_id": "a"}], "extra": 1}', ["body", "extra"]),
        (b'{"candidates": [{"ad_id": "a"}]', ["body"]),
        # Strings a database cannot hold: NUL (PostgreSQL text), lone surrogates (UTF-8).
        (b'{"candidates": [{"ad_id": "a\\u0000b"}]}', ["body", "candidates", 0, "ad_id"]),
        (b'{"candidates": [{"ad_id": "a"}], "request_id": "r\\u0000"}', ["body", "request_id"]),
        (b'{"candidates": [{"ad_id": "x\\udc00"}]}', ["body"]),
        (b'{"candidates": [{"ad_id": "x\\ud800y"}]}', ["body"]),
        (b'{"candidates": [{"ad_id": "\xff\xfe"}]}', ["body"]),
        # Times: a string with a timezone, in a sane range; an integer is not a time.
        (b'{"candidates": [{"ad_id": "a"}], "event_time": 1764324000}', ["body", "event_time"]),
        (b'{"candidates": [{"ad_id": "a"}], "event_time": 0}', ["body", "event_time"]),
        (b'{"candidates": [{"ad_id": "a"}], "event_time": "0001-01-01T00:00:00Z"}', ["body", "event_time"]),
        (b'{"candidates": [{"ad_id": "a"}], "event_time": "2026-12-01T12:00:00"}', ["body", "event_time"]),
    ],
)
def test_invalid_requests_name_the_field(raw: bytes, loc: list[Any]) -> None:
    with pytest.raises(RequestValidationError) as caught:
        decode_score_request(raw)
    assert list(caught.value.errors()[0]["loc"])[: len(loc)] == loc


def test_event_log_columns_keep_raw_values_and_missing_as_none() -> None:
    dense = np.array([[1.0, math.nan, -5.0] + [2.0**53 - 1] * 10])
    sparse = np.array([[0xFFFFFFFF, -1] + [7] * 24])
    (row,) = feature_columns(dense, sparse)
    assert (row["i1"], row["i2"], row["i3"], row["i13"]) == (1, None, -5, 2**53 - 1)
    assert (row["c1"], row["c2"], row["c26"]) == (0xFFFFFFFF, None, 7)
    assert all(type(v) is int for v in row.values() if v is not None)


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"impression_ids": ["x\\u0000"]}', ["impression_ids", 0]),
        (b'{"impression_ids": ["x\\udc00"]}', []),
        (b'{"impression_ids": ["%s"]}' % (b"a" * 37), ["impression_ids", 0]),
        (b'{"impression_ids": ["a"], "clicked_at": 0}', ["clicked_at"]),
        (b'{"impression_ids": ["a"], "clicked_at": "0001-01-01T00:00:00Z"}', ["clicked_at"]),
        (b'{"impression_ids": ["a"], "clicked_at": "2026-12-01T12:00:00"}', ["clicked_at"]),
    ],
)
def test_invalid_click_requests_name_the_field(raw: bytes, loc: list[Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        ClickRequest.model_validate_json(raw)
    assert list(caught.value.errors()[0]["loc"])[: len(loc)] == loc


def test_a_valid_click_request_is_accepted() -> None:
    body = ClickRequest.model_validate_json(b'{"impression_ids": ["a"], "clicked_at": "2026-12-01T12:00:00Z"}')
    assert body.clicked_at is not None and body.clicked_at.year == 2026
