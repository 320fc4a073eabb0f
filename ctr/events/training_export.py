"""``ctr events export``: matured impressions as labelled Criteo-layout days for retraining.

An impression is *matured* once its attribution window has closed (``served_at + window <=
now``); its label is 1 when a click arrived within ``[served_at, served_at + window]``.
Day ``k`` holds impressions served in ``[since + k·24h, since + (k+1)·24h)``; files are
``DIR/day_k`` in the Criteo layout plus ``DIR/export.json`` describing the window. Rows
stream from the database in chunks, so memory stays bounded.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import and_, case, select
from sqlalchemy.exc import SQLAlchemyError

from ctr.data.writer import frame_table, write_criteo
from ctr.errors import InputError
from ctr.events.store import EventStore
from ctr.events.tables import DENSE_DB, SPARSE_DB, clicks, impressions
from ctr.paths import output_dir
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS, day_name
from ctr.timeutil import to_us

DAY_US = 86_400_000_000
_TO_CRITEO = {db: col for db, col in zip((*DENSE_DB, *SPARSE_DB), (*DENSE_COLUMNS, *SPARSE_COLUMNS), strict=True)}
_SCHEMA = {"served_at_us": pl.Int64, "label": pl.Int8, **{c: pl.Int64 for c in (*DENSE_DB, *SPARSE_DB)}}
CHUNK = 50_000


@dataclass(frozen=True)
class ExportWindow:
    since: datetime
    until: datetime
    attribution_window: timedelta
    now: datetime

    def __post_init__(self) -> None:
        if self.until <= self.since:
            raise InputError("--until must be after --since")


def labelled_query(window: ExportWindow) -> Any:
    """SELECT of matured impressions in the window with their label, oldest first."""
    window_us = int(window.attribution_window.total_seconds() * 1_000_000)
    served = impressions.c.served_at_us
    label = case(
        (and_(clicks.c.clicked_at_us >= served, clicks.c.clicked_at_us <= served + window_us), 1), else_=0
    ).label("label")
    return (
        select(served, label, *[impressions.c[c] for c in DENSE_DB], *[impressions.c[c] for c in SPARSE_DB])
        .select_from(impressions.outerjoin(clicks, clicks.c.impression_id == impressions.c.impression_id))
        .where(served >= to_us(window.since), served < to_us(window.until), served + window_us <= to_us(window.now))
        .order_by(served, impressions.c.impression_id)
    )


def export_days(store: EventStore, window: ExportWindow, out: Path) -> dict[str, Any]:
    """Write the labelled days; returns the summary also saved as ``export.json``."""
    output_dir(out)
    since_us = to_us(window.since)
    n_days = math.ceil((to_us(window.until) - since_us) / DAY_US)
    counts = [{"day": k, "rows": 0, "positives": 0} for k in range(n_days)]
    handles: dict[int, Any] = {}
    try:
        with store.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(labelled_query(window))
            for chunk in result.partitions(CHUNK):
                frame = pl.DataFrame(chunk, schema=_SCHEMA, orient="row")
                day_of = ((frame["served_at_us"] - since_us) // DAY_US).to_numpy()
                for k in np.unique(day_of).tolist():
                    part = frame.filter(pl.Series(day_of == k))
                    if k not in handles:
                        handles[k] = open(out / f".{day_name(k)}.part", "wb")  # noqa: SIM115 - closed below
                    write_criteo(handles[k], frame_table(part.rename(_TO_CRITEO)))
                    counts[k]["rows"] += part.height
                    counts[k]["positives"] += int(part["label"].sum())
    except SQLAlchemyError as exc:
        raise store.failure("read impressions", exc) from exc
    finally:
        for handle in handles.values():
            handle.close()
    for k in range(n_days):
        written = out / f".{day_name(k)}.part"
        if not written.exists():
            written.write_bytes(b"")
        os.replace(written, out / day_name(k))
    summary = {
        "since": window.since.isoformat(),
        "until": window.until.isoformat(),
        "now": window.now.isoformat(),
        "attribution_window_seconds": window.attribution_window.total_seconds(),
        "days": counts,
    }
    (out / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
