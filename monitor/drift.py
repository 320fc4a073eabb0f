"""Drift of recent served features and pCTR against the serving version's training sample.

Reference: ``reference.parquet`` saved with the serving version (raw training rows) and the
pCTRs that version gives them. Current: a sample of the window's impressions (raw features
as logged, pCTR as served). Evidently's ``DataDriftPreset`` writes the HTML and JSON
reports; the share of drifted columns goes into the decision record.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select

from ctr.events.store import EventStore
from ctr.events.tables import DENSE_DB, SPARSE_DB, impressions
from ctr.repository import ONNX_FILE, REFERENCE_FILE, ModelRepository
from ctr.schema import DENSE_COLUMNS, SPARSE_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def _frame(
    dense: NDArray[Any], sparse: NDArray[Any], pctr: NDArray[Any], reference_sparse: NDArray[Any]
) -> pd.DataFrame:
    """Numeric columns for Evidently: the 13 counts, pCTR, and per hashed categorical the log
    count of its value in the reference sample (0: never seen there)."""
    data: dict[str, object] = {c: dense[:, i] for i, c in enumerate(DENSE_COLUMNS)}
    for j, c in enumerate(SPARSE_COLUMNS):
        values, counts = np.unique(reference_sparse[:, j], return_counts=True)
        pos = np.clip(np.searchsorted(values, sparse[:, j]), 0, values.size - 1)
        seen = values[pos] == sparse[:, j]
        data[f"{c}_ref_log_count"] = np.where(seen, np.log1p(counts[pos]), 0.0)
    data["pctr"] = pctr.astype(np.float64)
    import pandas as pd  # only when a drift report is asked for

    return pd.DataFrame(data)


def drift_report(
    store: EventStore, repo: ModelRepository, version: int, start_us: int, end_us: int, sample_rows: int, out_dir: Path
) -> float | None:
    """Write ``drift.html`` and ``drift.json`` into ``out_dir``; returns the drifted-column share."""
    import polars as pl
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from ctr.data.dataset import raw_arrays  # polars, Evidently and onnx: only when drift is asked for
    from ctr.onnx_export import onnx_predict, onnx_session

    ref_path = repo.version_dir(version) / REFERENCE_FILE
    if not ref_path.exists():
        log.warning("version %d has no %s; drift skipped", version, REFERENCE_FILE)
        return None
    ref = pl.read_parquet(ref_path).head(sample_rows)
    ref_dense, ref_sparse = raw_arrays(ref)
    ref_pctr, _ = onnx_predict(onnx_session(repo.version_dir(version) / ONNX_FILE), ref_dense, ref_sparse)
    query = (
        select(impressions.c.pctr, *[impressions.c[c] for c in DENSE_DB], *[impressions.c[c] for c in SPARSE_DB])
        .where(impressions.c.served_at_us >= start_us, impressions.c.served_at_us <= end_us)
        .order_by(impressions.c.served_at_us.desc())
        .limit(sample_rows)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    if len(rows) < 50:
        return None
    cur = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
    current = _frame(cur[:, 1:14], np.nan_to_num(cur[:, 14:40], nan=-1).astype(np.int64), cur[:, 0], ref_sparse)
    reference = _frame(ref_dense, ref_sparse, ref_pctr, ref_sparse)
    definition = DataDefinition(numerical_columns=list(reference.columns))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Evidently's internals warn about pandas and sklearn details
        evaluation = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluation.save_html(str(out_dir / "drift.html"))
    summary = evaluation.dict()
    (out_dir / "drift.json").write_text(json.dumps(summary, default=str))
    for metric in summary["metrics"]:
        if metric["metric_name"].startswith("DriftedColumnsCount"):
            return float(metric["value"]["share"])
    return None
