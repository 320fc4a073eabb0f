"""Impressions carry the probability that the serving policy showed them (``propensity``).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("impressions", sa.Column("propensity", sa.Float, nullable=True))


def downgrade() -> None:
    op.drop_column("impressions", "propensity")
