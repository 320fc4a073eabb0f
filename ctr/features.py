"""The feature transform: fitted on training days, saved with every model version.

The same object turns a training shard and a 100-row serving request into model inputs,
so there is no train/serve skew.

Integers (NVTabular's Criteo recipe): fill missing with 0 → clip at 0 → ``log1p`` →
standardise with the fitted mean and standard deviation. Output float32 ``(n, 13)``.

Categoricals: a per-feature vocabulary of values seen at least ``min_count`` times. Ids are
local to each feature: ``0`` missing, ``1`` out-of-vocabulary (rare or never seen), ``2…``
vocabulary values. ``extend`` grows the vocabulary with values first seen after the fit
(used by incremental training, which gives those ids fresh embedding rows); existing ids
never change. Output int64 ``(n, 26)``; ``sizes[j]`` is the number of ids of feature ``j``.

Lookups are one vectorised ``searchsorted`` over keys ``(feature << 32) | hash``.
Artifact: ``transform.json`` + ``vocab.parquet`` in a directory; no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ctr.errors import ArtifactError, InputError
from ctr.schema import DENSE_COLUMNS, N_DENSE, N_SPARSE, SPARSE_COLUMNS

FORMAT = "ctr-feature-transform/1"
MISSING_ID = 0
OOV_ID = 1
FIRST_VOCAB_ID = 2
_META = "transform.json"
_VOCAB = "vocab.parquet"


def _dense_stats(frames: pl.LazyFrame) -> tuple[NDArray[Any], NDArray[Any]]:
    """Mean and standard deviation (ddof 1) of ``log1p(clip(fill0(I)))`` per integer column.

    From exact counts of each integer value, summed in value order in numpy: the result does not
    depend on how polars splits the rows over threads (a parallel float sum would, in the last
    bits — and the encoded-shard cache keys on them). ``InputError`` for zero rows.
    """
    queries = [
        frames.select(pl.col(c).fill_null(0).clip(lower_bound=0)).group_by(c).len().sort(c) for c in DENSE_COLUMNS
    ]
    mean, std = np.zeros(N_DENSE), np.ones(N_DENSE)
    for j, counts in enumerate(pl.collect_all(queries, engine="streaming")):
        n = counts["len"].to_numpy().astype(np.float64)
        total = n.sum()
        if total == 0:
            raise InputError("cannot fit the feature transform on zero rows")
        x = np.log1p(counts[counts.columns[0]].to_numpy().astype(np.float64))
        mean[j] = float(np.dot(n, x) / total)
        std[j] = float(np.sqrt(np.dot(n, (x - mean[j]) ** 2) / (total - 1))) if total > 1 else 0.0
    return mean, std


def _frequent_values(frames: pl.LazyFrame, column: str, min_count: int) -> NDArray[Any]:
    counts = (
        frames.select(pl.col(column))
        .drop_nulls()
        .group_by(column)
        .len()
        .filter(pl.col("len") >= min_count)
        .select(column)
        .collect(engine="streaming")
    )
    return np.sort(counts[column].to_numpy().astype(np.int64))


@dataclass(frozen=True)
class FeatureTransform:
    """Fitted transform; see the module docstring for the encoding."""

    dense_mean: NDArray[Any]  # (13,) float64, of log1p(clip(fill0(I)))
    dense_std: NDArray[Any]  # (13,) float64, > 0
    min_count: int
    keys: NDArray[Any]  # (V,) int64 sorted, (feature << 32) | hash
    ids: NDArray[Any]  # (V,) int64, local id of each key
    sizes: NDArray[Any]  # (26,) int64, ids per feature including missing and OOV

    @classmethod
    def fit(cls, frames: pl.LazyFrame, min_count: int = 3) -> FeatureTransform:
        """Fit on the rows of ``frames`` (columns I1..I13, C1..C26), streaming."""
        if min_count < 1:
            raise InputError(f"min_count must be >= 1, got {min_count}")
        mean, std = _dense_stats(frames)
        std = np.where(std > 1e-12, std, 1.0)
        empty = cls(
            mean,
            std,
            min_count,
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.full(N_SPARSE, FIRST_VOCAB_ID, dtype=np.int64),
        )
        return empty.extend(frames)

    def extend(self, frames: pl.LazyFrame, min_count: int | None = None) -> FeatureTransform:
        """A copy whose vocabularies also hold the frequent values of ``frames`` not yet known.

        Known values keep their ids; new ones get ids ``sizes[j], sizes[j]+1, …`` in hash order.
        """
        threshold = self.min_count if min_count is None else min_count
        keys, ids, sizes = [self.keys], [self.ids], self.sizes.copy()
        for j, column in enumerate(SPARSE_COLUMNS):
            values = _frequent_values(frames, column, threshold)
            new_keys = (np.int64(j) << 32) | values
            new_keys = new_keys[~np.isin(new_keys, self.keys, assume_unique=True)]
            keys.append(new_keys)
            ids.append(sizes[j] + np.arange(new_keys.size, dtype=np.int64))
            sizes[j] += new_keys.size
        all_keys, all_ids = np.concatenate(keys), np.concatenate(ids)
        order = np.argsort(all_keys, kind="stable")
        return FeatureTransform(self.dense_mean, self.dense_std, self.min_count, all_keys[order], all_ids[order], sizes)

    def transform(self, dense: NDArray[Any], sparse: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        """Model inputs from raw values.

        dense: (n, 13) numeric, NaN where missing; sparse: (n, 26) int64 hashes, -1 where
        missing. Returns (float32 (n, 13), int64 (n, 26)).
        """
        dense = np.asarray(dense, dtype=np.float64)
        sparse = np.asarray(sparse, dtype=np.int64)
        if dense.ndim != 2 or dense.shape[1] != N_DENSE or sparse.shape != (dense.shape[0], N_SPARSE):
            raise InputError(
                f"expected dense (n, {N_DENSE}) and sparse (n, {N_SPARSE}); got {dense.shape} and {sparse.shape}"
            )
        x = np.log1p(np.clip(np.nan_to_num(dense, nan=0.0), 0.0, None))
        x = ((x - self.dense_mean) / self.dense_std).astype(np.float32)
        keys = (np.arange(N_SPARSE, dtype=np.int64) << 32) | sparse
        pos = np.minimum(np.searchsorted(self.keys, keys), max(self.keys.size - 1, 0))
        if self.keys.size:
            found = self.keys[pos] == keys
            out = np.where(found, self.ids[pos], OOV_ID)
        else:
            out = np.full(sparse.shape, OOV_ID, dtype=np.int64)
        out[sparse < 0] = MISSING_ID
        return x, out

    def transform_frame(self, frame: pl.DataFrame) -> tuple[NDArray[Any], NDArray[Any]]:
        """``transform`` for a frame with nullable columns I1..I13, C1..C26."""
        dense = frame.select([pl.col(c).cast(pl.Float64) for c in DENSE_COLUMNS]).to_numpy()
        sparse = frame.select([pl.col(c).fill_null(-1) for c in SPARSE_COLUMNS]).to_numpy()
        return self.transform(dense, sparse)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "min_count": self.min_count,
            "dense_mean": self.dense_mean.tolist(),
            "dense_std": self.dense_std.tolist(),
            "sizes": self.sizes.tolist(),
        }
        (directory / _META).write_text(json.dumps(meta, indent=2) + "\n")
        pl.DataFrame({"key": self.keys, "id": self.ids}).write_parquet(directory / _VOCAB, compression="zstd")

    @classmethod
    def load(cls, directory: Path) -> FeatureTransform:
        """Load a saved transform; ``ArtifactError`` if missing or corrupt."""
        try:
            meta = json.loads((directory / _META).read_text())
            if meta.get("format") != FORMAT:
                raise ArtifactError(f"{directory / _META}: unknown format {meta.get('format')!r}")
            table = pl.read_parquet(directory / _VOCAB)
            keys = table["key"].to_numpy().astype(np.int64)
            ids = table["id"].to_numpy().astype(np.int64)
            transform = cls(
                np.asarray(meta["dense_mean"], dtype=np.float64),
                np.asarray(meta["dense_std"], dtype=np.float64),
                int(meta["min_count"]),
                keys,
                ids,
                np.asarray(meta["sizes"], dtype=np.int64),
            )
        except ArtifactError:
            raise
        except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as exc:
            raise ArtifactError(f"feature transform in {directory} is missing or corrupt: {exc}") from exc
        transform.validate(directory)
        return transform

    def validate(self, where: Path | str = "transform") -> None:
        """Check internal consistency; ``ArtifactError`` naming ``where`` otherwise."""
        ok = (
            self.dense_mean.shape == (N_DENSE,)
            and self.dense_std.shape == (N_DENSE,)
            and self.sizes.shape == (N_SPARSE,)
            and self.keys.shape == self.ids.shape
            and bool(np.all(np.diff(self.keys) > 0))
        )
        if ok and self.keys.size:
            feature = self.keys >> 32
            ok = bool(np.all((feature >= 0) & (feature < N_SPARSE)))
            ok = ok and bool(np.all((self.ids >= FIRST_VOCAB_ID) & (self.ids < self.sizes[feature])))
        if not ok:
            raise ArtifactError(f"feature transform in {where} is inconsistent")
