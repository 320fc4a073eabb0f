"""Schemathesis against the live score API's own OpenAPI spec: no 5xx, no schema violation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from ctr.repository import ModelRepository
from ctr.serving.local import LocalStack
from ctr.train import TrainSpec, train_and_publish
from tests.conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live_api(small_days: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("fuzz")
    repo = ModelRepository(work / "repo")
    train_and_publish(TrainSpec(small_days, [0], 1, experiment="lr"), repo)
    with LocalStack(
        repo.root,
        f"sqlite:///{work / 'events.db'}",
        api_port=free_port(),
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        log_dir=work,
    ) as stack:
        yield f"http://127.0.0.1:{stack.api_port}"


@pytest.mark.parametrize("path", ["/v1/score", "/v1/clicks", "/healthz", "/readyz"])
def test_no_server_error_and_responses_match_the_spec(live_api: str, path: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    matching = [op for op in operations if op.path == path]
    assert matching, f"{path} missing from the OpenAPI spec"
    for operation in matching:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate()

        check()
