"""Fixtures of the serving tests: a model repository, a real tritonserver + score API, request bodies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ctr.data.dataset import day_shards
from ctr.repository import ModelRepository
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS
from ctr.serving.local import LocalStack
from ctr.train import StagedVersion, TrainSpec, train_and_publish, train_candidate
from tests.conftest import free_port


@pytest.fixture(scope="module")
def repo_and_next(small_days: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepository, StagedVersion]:
    """Version 1 published; a second candidate staged for the swap test."""
    repo = ModelRepository(tmp_path_factory.mktemp("serving") / "repo")
    train_and_publish(TrainSpec(small_days, [0, 1], 2, experiment="lr"), repo)
    nxt = train_candidate(TrainSpec(small_days, [0, 1], 2, experiment="lr", seed=99), repo)
    return repo, nxt


@pytest.fixture(scope="module")
def stack(
    repo_and_next: tuple[ModelRepository, StagedVersion], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    repo, _ = repo_and_next
    with local_stack(repo.root, tmp_path_factory.mktemp("stack")) as s:
        yield s


def local_stack(repo: Path, work: Path) -> LocalStack:
    """Triton (polling every second) and the score API on free ports, SQLite event log and logs in ``work``."""
    return LocalStack(
        repo,
        f"sqlite:///{work / 'events.db'}",
        api_port=free_port(),
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        poll_seconds=1.0,
        log_dir=work,
    )


@pytest.fixture(scope="module")
def requests_rows(small_days: Path) -> pl.DataFrame:
    return day_shards(small_days, 2).scan().head(500).collect()


def request_body(rows: pl.DataFrame, top_k: int | None = None) -> dict[str, Any]:
    """A score request: the first row's C1..C5 as context, each row a candidate."""
    context = {c: (None if rows[c][0] is None else f"{rows[c][0]:08x}") for c in SPARSE_COLUMNS[:5]}
    candidates = []
    for k, row in enumerate(rows.iter_rows(named=True)):
        features: dict[str, Any] = {c: row[c] for c in DENSE_COLUMNS if row[c] is not None}
        features |= {c: f"{row[c]:08x}" for c in SPARSE_COLUMNS[5:] if row[c] is not None}
        candidates.append({"ad_id": f"ad-{k}", "features": features})
    body: dict[str, Any] = {"context": context, "candidates": candidates}
    if top_k is not None:
        body["top_k"] = top_k
    return body
