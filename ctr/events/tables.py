"""Tables of the event log (SQLAlchemy Core). Migrations in ``migrations/`` create them.

Instants are integer microseconds since the Unix epoch, UTC (see ``ctr.timeutil``).
Impressions keep the raw feature values (``i1..i13``, ``c1..c26``: the retraining data).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Integer, MetaData, String, Table, Text

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
    # P(shown | candidates) under the serving policy (ctr.serving.exploration); NULL: logged before 0004
    Column("propensity", Float, nullable=True),
    *[Column(name, BigInteger, nullable=True) for name in DENSE_DB],
    *[Column(name, BigInteger, nullable=True) for name in SPARSE_DB],
)

clicks = Table(
    "clicks",
    metadata,
    Column("impression_id", String(36), primary_key=True),
    Column("clicked_at_us", BigInteger, nullable=False),
)

monitor_runs = Table(
    "monitor_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at_us", BigInteger, nullable=False),
    Column("as_of_us", BigInteger, nullable=False, index=True),
    Column("window_start_us", BigInteger, nullable=False),
    Column("window_end_us", BigInteger, nullable=False),
    Column("labelled", Integer, nullable=False),
    Column("positives", Integer, nullable=False),
    Column("auc", Float, nullable=True),
    Column("auc_lower", Float, nullable=True),
    Column("auc_upper", Float, nullable=True),
    Column("threshold", Float, nullable=True),
    Column("breach", Boolean, nullable=False),
    Column("decision", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("run_id", String(128), nullable=True),
    Column("submission", String(16), nullable=False),  # ok | failed | none
    Column("serving_version", Integer, nullable=True),
    Column("record", Text, nullable=False),  # the whole decision record as JSON
)

monitor_lease = Table(
    "monitor_lease",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_us", BigInteger, nullable=False),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("quarantined_at_us", BigInteger, nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # impression | clicks
    Column("reason", Text, nullable=False),
    Column("payload", Text, nullable=False),  # the refused row as ASCII JSON (NUL, surrogates escaped)
)
