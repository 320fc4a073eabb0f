"""Tables of the event log (SQLAlchemy Core). Migrations in ``migrations/`` create them.

Instants are integer microseconds since the Unix epoch, UTC (see ``ctr.timeutil``).
Impressions keep the raw feature values (``i1..i13``, ``c1..c26``: the retraining data).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table

from ctr.schema import N_DENSE, N_SPARSE

metadata = MetaData()

DENSE_DB = [f"i{i}" for i in range(1, N_DENSE + 1)]
SPARSE_DB = [f"c{i}" for i in range(1, N_SPARSE + 1)]

impressions = Table(
    "impressions",
    metadata,
    Column("impression_id", String(36), primary_key=True),
    Column("request_id", String(128), nullable=False),
    Column("ad_id", String(256), nullable=False),
    Column("served_at_us", BigInteger, nullable=False, index=True),
    Column("model_version", Integer, nullable=False),
    Column("pctr", Float, nullable=False),
    *[Column(name, BigInteger, nullable=True) for name in DENSE_DB],
    *[Column(name, BigInteger, nullable=True) for name in SPARSE_DB],
)

clicks = Table(
    "clicks",
    metadata,
    Column("impression_id", String(36), primary_key=True),
    Column("clicked_at_us", BigInteger, nullable=False),
)
