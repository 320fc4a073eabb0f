"""Impressions and clicks.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

DENSE = [f"i{i}" for i in range(1, 14)]
SPARSE = [f"c{i}" for i in range(1, 27)]


def upgrade() -> None:
    op.create_table(
        "impressions",
        sa.Column("impression_id", sa.String(36), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("ad_id", sa.String(256), nullable=False),
        sa.Column("served_at_us", sa.BigInteger, nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("pctr", sa.Float, nullable=False),
        *[sa.Column(name, sa.BigInteger, nullable=True) for name in DENSE],
        *[sa.Column(name, sa.BigInteger, nullable=True) for name in SPARSE],
    )
    op.create_index("ix_impressions_served_at_us", "impressions", ["served_at_us"])
    op.create_table(
        "clicks",
        sa.Column("impression_id", sa.String(36), primary_key=True),
        sa.Column("clicked_at_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("clicks")
    op.drop_index("ix_impressions_served_at_us", "impressions")
    op.drop_table("impressions")
