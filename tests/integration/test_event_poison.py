"""Poison rows, click times and lock waits on real SQLite and PostgreSQL.

A row the database refuses for its content must never look like an outage: it is found,
quarantined with its reason, and everything else commits (the spool replays nothing
forever). Locks and click times are bounded so one client cannot stall or poison others.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ctr.events.spool import Spool
from ctr.events.store import ClickCounts, ContentRefused, EventStore, StoreUnavailable
from ctr.timeutil import to_us
from tests.integration.test_events import impression

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[], str]) -> Iterator[EventStore]:
    url = f"sqlite:///{tmp_path / 'events.db'}" if request.param == "sqlite" else pg_database()
    events = EventStore(url)
    events.migrate()
    yield events
    events.dispose()


def poison_for(store: EventStore) -> list[dict[str, object]]:
    """Rows the store's database refuses: a lone surrogate everywhere, a NUL and a too-long id on PostgreSQL."""
    rows = [impression(T0, c1=1) | {"ad_id": "x\udc00"}]
    if store.dialect == "postgresql":
        rows += [impression(T0) | {"ad_id": "a\x00b"}, impression(T0) | {"request_id": "r\x00"}]
    return rows


def test_a_poison_row_is_quarantined_and_the_rest_commit(store: EventStore) -> None:
    good = [impression(T0, i1=k) for k in range(40)]
    poison = poison_for(store)
    batch = good[:17] + poison + good[17:]
    written = store.write(batch, [([str(good[0]["impression_id"])], to_us(T0))])
    assert written.quarantined == len(poison)
    assert written.clicks == [ClickCounts(1, 0, 0)]
    assert store.count_impressions() == len(good)
    kept = store.quarantined()
    assert [r["kind"] for r in kept] == ["impression"] * len(poison)
    assert {r["payload"]["impression_id"] for r in kept} == {p["impression_id"] for p in poison}
    assert all(r["reason"] for r in kept)
    assert kept[0]["payload"]["ad_id"] == "x\udc00"  # kept as sent (escaped on disk), for a human to look at


def test_a_spooled_poison_batch_is_quarantined_not_retried_forever(store: EventStore, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    good = [impression(T0) for _ in range(5)]
    spool.append(poison_for(store) + good[:2])
    spool.append(good[2:])
    assert spool.replay(store) == len(poison_for(store)) + 5
    assert not spool.holds_batches() and spool.size_bytes() == 0
    assert store.count_impressions() == 5
    assert len(store.quarantined()) == len(poison_for(store))


def test_a_click_request_the_database_refuses_fails_alone(store: EventStore) -> None:
    rows = [impression(T0) for _ in range(2)]
    store.log_impressions(rows)
    at = to_us(T0 + timedelta(minutes=1))
    written = store.write(
        [], [([str(rows[0]["impression_id"])], at), (["x\udc00"], at), ([str(rows[1]["impression_id"])], at)]
    )
    assert written.clicks[0] == ClickCounts(1, 0, 0) and written.clicks[2] == ClickCounts(1, 0, 0)
    assert isinstance(written.clicks[1], ContentRefused)
    assert [r["kind"] for r in store.quarantined()] == ["clicks"]


def test_a_mis_dated_click_is_refused_and_does_not_block_the_genuine_one(store: EventStore) -> None:
    row = impression(T0)
    store.log_impressions([row])
    iid = str(row["impression_id"])
    assert store.record_clicks([iid], to_us(datetime(2000, 1, 1, tzinfo=UTC))) == ClickCounts(0, 0, 0, 1)
    assert store.record_clicks([iid], to_us(T0 + timedelta(days=30))) == ClickCounts(0, 0, 0, 1)
    assert store.record_clicks([iid], to_us(T0 + timedelta(minutes=3))) == ClickCounts(1, 0, 0, 0)
    assert store.record_clicks([iid], to_us(T0 + timedelta(minutes=4))) == ClickCounts(0, 1, 0, 0)


def test_a_click_within_the_clock_skew_counts_at_the_impressions_time(store: EventStore) -> None:
    row = impression(T0)
    store.log_impressions([row])
    assert store.record_clicks([str(row["impression_id"])], to_us(T0 - timedelta(minutes=1))) == ClickCounts(1, 0, 0, 0)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT clicked_at_us FROM clicks")).scalar_one() == to_us(T0)


def test_a_locked_table_fails_fast_instead_of_hanging(pg_database: Callable[[], str]) -> None:
    url = pg_database()
    EventStore(url).migrate()
    store = EventStore(url, lock_timeout_ms=50, statement_timeout_ms=100)
    locker = create_engine(url)
    with locker.connect() as conn:
        conn.execute(text("BEGIN"))
        conn.execute(text("LOCK TABLE impressions IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="lock timeout"):
            store.log_impressions([impression(T0)])
        assert time.monotonic() - started < 1.0
        conn.execute(text("ROLLBACK"))
    store.log_impressions([impression(T0)])
    assert store.count_impressions() == 1
    locker.dispose()
    store.dispose()


def test_a_long_replay_does_not_hold_up_new_spooled_batches(pg_database: Callable[[], str], tmp_path: Path) -> None:
    """Replay blocks on a locked table; ``append`` (the commit path during a backlog) must not wait for it."""
    url = pg_database()
    store = EventStore(url)
    store.migrate()
    spool = Spool(tmp_path / "spool")
    spool.append([impression(T0)])
    locker = create_engine(url)
    with locker.connect() as conn:
        conn.execute(text("BEGIN"))
        conn.execute(text("LOCK TABLE impressions IN ACCESS EXCLUSIVE MODE"))
        replay = threading.Thread(target=spool.replay, args=(store,))
        replay.start()
        time.sleep(0.3)  # the replay now waits on the lock
        started = time.monotonic()
        spool.append([impression(T0)])
        appended_in = time.monotonic() - started
        conn.execute(text("ROLLBACK"))
    replay.join(10)
    assert appended_in < 0.2
    spool.replay(store)
    assert store.count_impressions() == 2 and not spool.holds_batches()
    locker.dispose()
    store.dispose()


def test_ctr_events_quarantine_list_and_export(store: EventStore, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ctr.cli import app
    from ctr.errors import InputError

    poison = poison_for(store)
    store.write([*poison, impression(T0)], [])
    runner = CliRunner()
    listed = runner.invoke(app, ["events", "quarantine", "list", "--db", store.url])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count(" impression: ") == len(poison) and "\\udc00" in listed.output
    as_json = runner.invoke(app, ["events", "quarantine", "list", "--db", store.url, "--json"])
    assert len(json.loads(as_json.output)["rows"]) == len(poison)
    out = tmp_path / "q.jsonl"
    exported = runner.invoke(app, ["events", "quarantine", "export", "--db", store.url, "--out", str(out)])
    assert exported.exit_code == 0 and f"{len(poison)} quarantined rows" in exported.output
    lines = [json.loads(line) for line in out.read_text(encoding="ascii").splitlines()]
    assert {r["payload"]["impression_id"] for r in lines} == {p["impression_id"] for p in poison}
    refused = runner.invoke(app, ["events", "quarantine", "export", "--db", store.url, "--out", str(tmp_path)])
    assert isinstance(refused.exception, InputError) and "cannot write" in str(refused.exception)


def test_a_spooled_batch_of_another_shape_is_set_aside_or_quarantined(store: EventStore, tmp_path: Path) -> None:
    """A row without a column (another version's batch) is quarantined; a file that is not a list of
    rows is renamed aside; neither stops the replay of the good batches behind it."""
    spool = Spool(tmp_path / "spool")
    good = [impression(T0) for _ in range(3)]
    spool.append([{"impression_id": "00000000-0000-7000-8000-000000000001", "ad_id": "a"}, good[0]])
    (tmp_path / "spool" / "batch-00000000-0000-7000-8000-000000000000.json").write_text('{"not": "a list"}')
    spool.append(good[1:])
    spool.replay(store)
    assert store.count_impressions() == 3 and not spool.holds_batches()
    assert [q["payload"]["ad_id"] for q in store.quarantined()] == ["a"]
    assert list((tmp_path / "spool").glob("unreadable-batch-*"))
