"""Quarantine: event rows the database refused for their content, kept with the reason.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("quarantined_at_us", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_index("ix_quarantine_quarantined_at_us", "quarantine", ["quarantined_at_us"])


def downgrade() -> None:
    op.drop_index("ix_quarantine_quarantined_at_us", "quarantine")
    op.drop_table("quarantine")
