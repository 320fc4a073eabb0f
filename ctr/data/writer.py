"""Write rows in the exact Criteo layout (used by the generator and the event export).

Columns go through Arrow buffers and Arrow's CSV writer, not Python row loops: hashes are
formatted as 8 lowercase hex characters with a 64k-entry lookup table.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
from numpy.typing import NDArray

from ctr.schema import DENSE_COLUMNS, LABEL, SPARSE_COLUMNS

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_IDX = np.arange(65536)
#: Four ASCII hex digits of every 16-bit number, packed in one uint32 (native byte order).
_HEX16 = np.ascontiguousarray(np.stack([_HEX[(_IDX >> s) & 15] for s in (12, 8, 4, 0)], axis=1)).view(np.uint32).ravel()
_WRITE_OPTIONS = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")


def _hex_column(values: NDArray[Any]) -> pa.StringArray:
    """int64 hashes in [0, 2^32) (or -1 for missing) → 8-character hex strings (or null)."""
    n = values.shape[0]
    v = values.astype(np.uint32)  # -1 wraps; it is masked below
    chars = np.empty((n, 2), dtype=np.uint32)
    chars[:, 0] = _HEX16[v >> 16]
    chars[:, 1] = _HEX16[v & 0xFFFF]
    offsets = pa.py_buffer(np.arange(0, 8 * n + 1, 8, dtype=np.int32))
    valid = pa.py_buffer(np.packbits(values >= 0, bitorder="little"))
    return pa.StringArray.from_buffers(n, offsets, pa.py_buffer(chars), valid)


def criteo_table(
    label: NDArray[Any], dense: NDArray[Any], dense_missing: NDArray[Any], sparse: NDArray[Any]
) -> pa.Table:
    """Arrow table in Criteo column order.

    label: (n,) 0/1; dense: (n, 13) int64 with dense_missing (n, 13) bool;
    sparse: (n, 26) int64 hashes, -1 where missing.
    """
    columns: dict[str, pa.Array] = {LABEL: pa.array(label.astype(np.int8))}
    for i, name in enumerate(DENSE_COLUMNS):
        columns[name] = pa.array(np.ascontiguousarray(dense[:, i]), mask=dense_missing[:, i])
    for j, name in enumerate(SPARSE_COLUMNS):
        columns[name] = _hex_column(np.ascontiguousarray(sparse[:, j]))
    return pa.table(columns)


def frame_table(frame: pl.DataFrame) -> pa.Table:
    """``criteo_table`` for a frame with columns label, I1..I13, C1..C26 (nulls = missing)."""
    dense = frame.select(DENSE_COLUMNS)
    return criteo_table(
        frame[LABEL].to_numpy(),
        dense.fill_null(0).to_numpy(),
        dense.select(pl.all().is_null()).to_numpy(),
        frame.select(SPARSE_COLUMNS).fill_null(-1).to_numpy(),
    )


def write_criteo(stream: BinaryIO, table: pa.Table) -> None:
    """Append ``table`` (from ``criteo_table``) to ``stream`` as tab-separated lines."""
    pacsv.write_csv(table, stream, write_options=_WRITE_OPTIONS)
