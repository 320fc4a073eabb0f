"""The Criteo click-log layout and the public facts about it (its README: data/criteo_sample/).

One line per impression, tab-separated, no header: ``label, I1..I13, C1..C26``.
``I*`` are integer counts (may be empty; ``I2`` may be negative), ``C*`` are 32-bit
hashes written as hex (may be empty).
"""

from __future__ import annotations

N_DENSE = 13
N_SPARSE = 26
N_COLUMNS = 1 + N_DENSE + N_SPARSE

LABEL = "label"
DENSE_COLUMNS: tuple[str, ...] = tuple(f"I{i}" for i in range(1, N_DENSE + 1))
SPARSE_COLUMNS: tuple[str, ...] = tuple(f"C{i}" for i in range(1, N_SPARSE + 1))
ALL_COLUMNS: tuple[str, ...] = (LABEL, *DENSE_COLUMNS, *SPARSE_COLUMNS)

#: Distinct values per categorical feature in the Criteo 1TB logs (DLRM / torchrec).
CRITEO_1TB_CARDINALITIES: tuple[int, ...] = (
    45833188, 36746, 17245, 7413, 20243, 3, 7114, 1441, 62, 29275261, 1572176, 345138, 10,
    2209, 11267, 128, 4, 974, 14, 48937457, 11316796, 40094537, 452104, 12606, 104, 35,
)  # fmt: skip

#: Distinct values per categorical feature in Kaggle's Display Advertising Challenge.
KAGGLE_DAC_CARDINALITIES: tuple[int, ...] = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
    14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip

#: Rows in the Criteo 1TB logs (24 days), used to scale cardinalities to a smaller data set.
CRITEO_1TB_ROWS = 4_373_472_329

#: Value used for a missing categorical in in-memory arrays (hashes are non-negative).
MISSING_SPARSE = -1


def day_name(day: int) -> str:
    """File stem of day ``day`` in a data directory (``day_0``, ``day_1``, ...)."""
    return f"day_{day}"
