"""Feature transform: the integer recipe, vocabularies, unseen values, save/load, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ctr.data.dataset import day_shards
from ctr.errors import ArtifactError
from ctr.features import MISSING_ID, OOV_ID, FeatureTransform
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS


def frame(dense_rows: list[list[float | None]], sparse_rows: list[list[int | None]]) -> pl.LazyFrame:
    data: dict[str, list[object]] = {c: [r[i] for r in dense_rows] for i, c in enumerate(DENSE_COLUMNS)}
    data |= {c: [r[j] for r in sparse_rows] for j, c in enumerate(SPARSE_COLUMNS)}
    schema = {c: pl.Int64 for c in (*DENSE_COLUMNS, *SPARSE_COLUMNS)}
    return pl.LazyFrame(data, schema=schema)


@pytest.fixture(scope="module")
def fitted(small_days: Path) -> FeatureTransform:
    return FeatureTransform.fit(day_shards(small_days, 0).scan(), min_count=3)


def test_integer_recipe_matches_nvtabular_criteo_steps() -> None:
    dense = [[None, -5, 0, 9, *[1] * 9], [3, 2, 0, 9, *[1] * 9]]
    sparse = [[1] * 26, [1] * 26]
    t = FeatureTransform.fit(frame(dense, sparse), min_count=1)
    filled = np.array([[0, 0, 0, 9], [3, 2, 0, 9]], dtype=np.float64)  # fill 0, clip at 0
    logged = np.log1p(filled)
    expected_mean = logged.mean(axis=0)
    np.testing.assert_allclose(t.dense_mean[:4], expected_mean)
    x, _ = t.transform(np.array([[np.nan, -5, 0, 9, *[1] * 9]], dtype=np.float64), np.ones((1, 26), np.int64))
    std = np.where(logged.std(axis=0, ddof=1) > 0, logged.std(axis=0, ddof=1), 1.0)
    np.testing.assert_allclose(x[0, :4], (logged[0] - expected_mean) / std, rtol=1e-6, atol=1e-6)
    assert x.dtype == np.float32


def test_vocabulary_threshold_missing_and_unseen() -> None:
    sparse = [[7] * 26] * 3 + [[8] * 26]  # 7 is seen 3 times, 8 once
    t = FeatureTransform.fit(frame([[1] * 13] * 4, sparse), min_count=2)
    _, ids = t.transform(np.ones((3, 13)), np.array([[7] * 26, [8] * 26, [-1] * 26]))
    assert (ids[0] >= 2).all()
    assert (ids[1] == OOV_ID).all()  # rare at fit time
    assert (ids[2] == MISSING_ID).all()
    assert t.sizes.tolist() == [3] * 26


def test_extend_keeps_known_ids_and_adds_rows(fitted: FeatureTransform, small_days: Path) -> None:
    day1 = day_shards(small_days, 1).scan()
    grown = fitted.extend(day1)
    assert (grown.sizes >= fitted.sizes).all() and (grown.sizes > fitted.sizes).any()
    rows = day1.collect()
    _, before = fitted.transform_frame(rows)
    _, after = grown.transform_frame(rows)
    known = before >= 2
    np.testing.assert_array_equal(after[known], before[known])
    newly = (before == OOV_ID) & (after >= 2)
    assert newly.any()
    assert (after[newly] >= np.broadcast_to(fitted.sizes, after.shape)[newly]).all()


def test_batch_equals_row_by_row(fitted: FeatureTransform, small_days: Path) -> None:
    rows = day_shards(small_days, 2).scan().head(100).collect()
    x_all, ids_all = fitted.transform_frame(rows)
    for i in range(0, 100, 7):
        x, ids = fitted.transform_frame(rows.slice(i, 1))
        np.testing.assert_array_equal(x[0], x_all[i])
        np.testing.assert_array_equal(ids[0], ids_all[i])


def test_save_load_round_trip(fitted: FeatureTransform, small_days: Path, tmp_path: Path) -> None:
    fitted.save(tmp_path / "t")
    loaded = FeatureTransform.load(tmp_path / "t")
    rows = day_shards(small_days, 2).scan().collect()
    for a, b in zip(fitted.transform_frame(rows), loaded.transform_frame(rows), strict=True):
        np.testing.assert_array_equal(a, b)


def test_corrupt_artifact_is_reported(fitted: FeatureTransform, tmp_path: Path) -> None:
    fitted.save(tmp_path / "t")
    (tmp_path / "t" / "vocab.parquet").write_bytes(b"not parquet")
    with pytest.raises(ArtifactError, match="missing or corrupt"):
        FeatureTransform.load(tmp_path / "t")
