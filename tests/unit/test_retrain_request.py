"""The one retrain request: defaults, validation before any run, relative windows, JSON round trip."""

from __future__ import annotations

import pytest

from ctr.errors import InputError
from ctr.retrain_request import RetrainRequest
from pipelines.runner import arguments, schedule


def test_a_relative_window_resolves_against_now() -> None:
    r = RetrainRequest(repo="/r", events=True, since="-24h", until="-1h", now="2026-12-01T12:00:00Z")
    since, until = r.window()
    assert (since.isoformat(), until.isoformat()) == ("2026-11-30T12:00:00+00:00", "2026-12-01T11:00:00+00:00")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "nightly", "train_days": "0"}, "--mode must be one of full, incremental"),
        ({"events": True}, "needs --since"),
        ({"events": True, "since": "-1h", "until": "-2h"}, "must be before --until"),
        ({"train_days": ""}, "needs --train-days"),
        ({"train_days": "0", "epsilon": float("nan")}, "--epsilon must lie in"),
        ({"train_days": "0", "attribution_window": "0s"}, "--attribution-window"),
    ],
)
def test_a_request_that_could_not_run_is_refused_at_once(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        RetrainRequest(repo="/r", **fields)  # type: ignore[arg-type]


def test_the_request_is_the_pipelines_one_parameter_and_round_trips() -> None:
    r = RetrainRequest(repo="/r", events=True, since="-1d", run_id="x")
    assert list(arguments(r)) == ["request"]
    assert RetrainRequest.from_json(arguments(r)["request"]) == r
    with pytest.raises(InputError, match="unknown retrain request field"):
        RetrainRequest.from_json('{"repo": "/r", "train_days": "0", "events_db": "postgresql://u:p@h/db"}')


def test_a_schedule_needs_a_window_that_slides() -> None:
    fixed = RetrainRequest(repo="/r", events=True, since="2026-11-30T00:00:00Z")
    with pytest.raises(InputError, match="relative --since"):
        schedule(fixed, "0 0 3 * * *", host="http://unused")
    with pytest.raises(InputError, match="fixed run id"):
        schedule(fixed.replace(since="-24h", run_id="r1"), "0 0 3 * * *", host="http://unused")
