"""The labelled window: matured impressions joined with their clicks, in SQL.

An impression is matured once its attribution window has closed (``served_at + window <=
as_of``); its label is whether a click arrived within that window. The window holds the
newest ``max_labelled`` matured impressions served within ``max_age`` of ``as_of``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import and_, case, select

from ctr.events.schema import clicks, impressions
from ctr.events.store import EventStore
from ctr.timeutil import to_us
from monitor.rules import Rules


@dataclass(frozen=True)
class LabelledWindow:
    start_us: int
    end_us: int
    pctr: np.ndarray  # float64
    label: np.ndarray  # int8
    version: np.ndarray  # int64

    @property
    def positives(self) -> int:
        return int(self.label.sum())

    @property
    def negatives(self) -> int:
        return int(self.label.size - self.label.sum())


def load_window(store: EventStore, rules: Rules, as_of: datetime) -> LabelledWindow:
    """Fetch the window (one query; label computed by the database)."""
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
    # One statement through the driver's own cursor: a million rows as plain tuples, without
    # building a SQLAlchemy Row for each (the values are numbers the code itself bound).
    sql = str(query.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    with store.engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.execute(sql)
            rows = cursor.fetchall()
        finally:
            cursor.close()
    if not rows:
        empty = np.empty(0)
        return LabelledWindow(start_us, end_us, empty, empty.astype(np.int8), empty.astype(np.int64))
    arr = np.array(rows, dtype=np.float64)
    return LabelledWindow(start_us, end_us, arr[:, 0], arr[:, 1].astype(np.int8), arr[:, 2].astype(np.int64))
