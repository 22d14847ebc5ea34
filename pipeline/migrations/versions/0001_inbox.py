"""The inbox (events a consumer group handled) and the parked keys (keys whose events wait in
the dead-letter topic behind a failed one).

Revision ID: 0001_inbox
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_inbox"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_inbox",
        sa.Column("consumer_group", sa.String(255), primary_key=True),
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_pipeline_inbox_recorded_at", "pipeline_inbox", ["recorded_at"])
    op.create_table(
        "pipeline_parked_keys",
        sa.Column("consumer_group", sa.String(255), primary_key=True),
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("key", sa.LargeBinary, primary_key=True),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("redrive_id", sa.String(64), nullable=True),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pipeline_parked_keys")
    op.drop_index("ix_pipeline_inbox_recorded_at", "pipeline_inbox")
    op.drop_table("pipeline_inbox")
