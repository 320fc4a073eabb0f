"""Monitor decision records and the monitor lease.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "monitor_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at_us", sa.BigInteger, nullable=False),
        sa.Column("as_of_us", sa.BigInteger, nullable=False),
        sa.Column("window_start_us", sa.BigInteger, nullable=False),
        sa.Column("window_end_us", sa.BigInteger, nullable=False),
        sa.Column("labelled", sa.Integer, nullable=False),
        sa.Column("positives", sa.Integer, nullable=False),
        sa.Column("auc", sa.Float, nullable=True),
        sa.Column("auc_lower", sa.Float, nullable=True),
        sa.Column("auc_upper", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("breach", sa.Boolean, nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=True),
        sa.Column("submission", sa.String(16), nullable=False),
        sa.Column("serving_version", sa.Integer, nullable=True),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_index("ix_monitor_runs_as_of_us", "monitor_runs", ["as_of_us"])
    op.create_table(
        "monitor_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitor_lease")
    op.drop_index("ix_monitor_runs_as_of_us", "monitor_runs")
    op.drop_table("monitor_runs")
