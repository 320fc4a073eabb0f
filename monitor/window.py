"""The labelled window: matured impressions joined with their clicks, in SQL.

An impression is matured once its attribution window has closed (``served_at + window <=
as_of``); its label is whether a click arrived within that window. The window holds the
newest ``max_labelled`` matured impressions served within ``max_age`` of ``as_of``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import and_, case, select
from sqlalchemy.exc import DBAPIError

from ctr.events.store import EventStore
from ctr.events.tables import clicks, impressions
from ctr.timeutil import to_us
from monitor.rules import Rules


@dataclass(frozen=True)
class LabelledWindow:
    start_us: int
    end_us: int
    pctr: NDArray[Any]  # float64
    label: NDArray[Any]  # int8
    version: NDArray[Any]  # int64

    @property
    def positives(self) -> int:
        return int(self.label.sum())

    @property
    def negatives(self) -> int:
        return int(self.label.size - self.label.sum())


def _fetch(raw: Any, sql: str, binary: bool) -> NDArray[Any]:
    """All rows as one float array; PostgreSQL sends them in its binary format (no text parsing)."""
    cursor = raw.cursor(binary=True) if binary else raw.cursor()
    try:
        cursor.execute(sql)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=3 * len(rows))
    return flat.reshape(-1, 3)


def load_window(store: EventStore, rules: Rules, as_of: datetime) -> LabelledWindow:
    """Fetch the window (one query; label computed by the database); driver errors surface as
    SQLAlchemy's ``DBAPIError``."""
    window_us = int(rules.attribution_window.total_seconds() * 1_000_000)
    end_us = to_us(as_of) - window_us
    start_us = to_us(as_of) - int(rules.max_age.total_seconds() * 1_000_000)
    served = impressions.c.served_at_us
    label = case((and_(clicks.c.clicked_at_us >= served, clicks.c.clicked_at_us <= served + window_us), 1), else_=0)
    query = (
        select(impressions.c.pctr, label, impressions.c.model_version)
        .select_from(impressions.outerjoin(clicks, clicks.c.impression_id == impressions.c.impression_id))
        .where(served >= start_us, served <= end_us)
        .order_by(served.desc())
        .limit(rules.max_labelled)
    )
    # One statement through the driver itself: a million rows without a SQLAlchemy Row each
    # (the values in the SQL are numbers the code bound, rendered as literals).
    sql = str(query.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    driver_error = store.engine.dialect.loaded_dbapi.Error
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        try:
            arr = _fetch(raw, sql, binary=store.dialect == "postgresql")
        except driver_error as exc:  # as SQLAlchemy would raise it, for the callers' handlers
            raise DBAPIError.instance(sql, None, exc, driver_error) from exc
    if arr.shape[0] == 0:
        empty = np.empty(0)
        return LabelledWindow(start_us, end_us, empty, empty.astype(np.int8), empty.astype(np.int64))
    return LabelledWindow(start_us, end_us, arr[:, 0], arr[:, 1].astype(np.int8), arr[:, 2].astype(np.int64))
