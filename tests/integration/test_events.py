"""The event log on real SQLite and PostgreSQL: migrations, idempotence, export labels."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ctr.data.reader import ReadReport, iter_batches
from ctr.events.store import ClickCounts, EventStore
from ctr.events.training_export import ExportWindow, export_days
from ctr.ids import uuid7
from ctr.timeutil import to_us


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[], str]) -> EventStore:
    url = f"sqlite:///{tmp_path / 'events.db'}" if request.param == "sqlite" else pg_database()
    events = EventStore(url)
    events.migrate()
    events.migrate()  # idempotent
    return events


def impression(at: datetime, **features: int | None) -> dict[str, object]:
    row: dict[str, object] = {
        "impression_id": uuid7(),
        "request_id": "r",
        "ad_id": "ad",
        "model_version": 1,
        "served_at_us": to_us(at),
        "pctr": 0.1,
    }
    row |= {f"i{i}": None for i in range(1, 14)} | {f"c{j}": None for j in range(1, 27)}
    row |= features
    return row


def test_clicks_are_idempotent(store: EventStore) -> None:
    t = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [impression(t) for _ in range(3)]
    store.log_impressions(rows)
    store.log_impressions(rows)  # a replay inserts nothing twice
    assert store.count_impressions() == 3
    ids = [r["impression_id"] for r in rows]
    first = store.record_clicks([ids[0], ids[1], "nope"], to_us(t))
    assert (first.accepted, first.duplicate, first.unknown) == (2, 0, 1)
    again = store.record_clicks([ids[0], ids[0], ids[2]], to_us(t))
    assert (again.accepted, again.duplicate, again.unknown) == (1, 1, 0)


def test_export_labels_follow_the_attribution_window(store: EventStore, tmp_path: Path) -> None:
    t0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
    window = timedelta(minutes=30)
    inside = impression(t0, i1=5, i2=-2, c1=0x68FD1E64)
    late = impression(t0 + timedelta(minutes=1), i1=None, c3=0xABC)
    never = impression(t0 + timedelta(minutes=2))
    next_day = impression(t0 + timedelta(hours=24))
    young = impression(t0 + timedelta(hours=24, minutes=50))  # window still open at `now`
    store.log_impressions([inside, late, never, next_day, young])
    store.record_clicks([inside["impression_id"]], to_us(t0 + window - timedelta(seconds=1)))
    store.record_clicks([late["impression_id"]], to_us(t0 + timedelta(minutes=1) + window + timedelta(seconds=1)))
    store.record_clicks([next_day["impression_id"]], to_us(t0 + timedelta(hours=24, minutes=10)))
    store.record_clicks([young["impression_id"]], to_us(t0 + timedelta(hours=24, minutes=55)))
    now = t0 + timedelta(hours=25)
    summary = export_days(store, ExportWindow(t0, t0 + timedelta(days=2), window, now), tmp_path / "out")
    assert [(d["rows"], d["positives"]) for d in summary["days"]] == [(3, 1), (1, 1)]
    report = ReadReport()
    day0 = pl.concat(list(iter_batches(tmp_path / "out" / "day_0", report)))
    assert report.bad_total == 0
    assert day0["label"].to_list() == [1, 0, 0]
    assert day0["I1"].to_list() == [5, None, None] and day0["I2"].to_list() == [-2, None, None]
    assert day0["C1"].to_list() == [0x68FD1E64, None, None] and day0["C3"].to_list() == [None, 0xABC, None]


def test_click_batches_count_like_one_request_after_another(store: EventStore) -> None:
    """Group commit of clicks: per-request counts equal those of sequential commits."""
    t = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [impression(t) for _ in range(3)]
    store.log_impressions(rows)
    ids = [str(r["impression_id"]) for r in rows]
    at = to_us(t + timedelta(minutes=1))
    late = impression(t)  # logged in the same transaction as the clicks on it
    batch = [([ids[0], ids[1]], at), ([ids[1], ids[2], "nope"], at), ([ids[0], str(late["impression_id"])], at)]
    counts = store.write([late], batch).clicks
    assert counts == [ClickCounts(2, 0, 0), ClickCounts(1, 1, 1), ClickCounts(1, 1, 0)]
    assert store.write([], [([ids[2]], at)]).clicks == [ClickCounts(0, 1, 0)]
    assert store.count_impressions() == 4


def test_a_click_request_over_several_statement_chunks_counts_every_id(store: EventStore) -> None:
    """More ids than one statement carries (`_ClickSql.CHUNK`): known, unknown and repeated."""
    t = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [impression(t) for _ in range(1_200)]
    store.log_impressions(rows)
    ids = [str(r["impression_id"]) for r in rows]
    unknown = [f"missing-{k}" for k in range(300)]
    at = to_us(t + timedelta(minutes=1))
    assert store.record_clicks(ids[:700], at) == ClickCounts(700, 0, 0)
    assert store.record_clicks(ids + unknown, at) == ClickCounts(500, 700, 300)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM clicks").scalar() == 1_200
