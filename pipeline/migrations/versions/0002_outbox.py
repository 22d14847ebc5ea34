"""The transactional outbox (events waiting for the relay) and the relay's lease (SQLite).

On PostgreSQL a statement-level trigger sends ``NOTIFY pipeline_outbox`` after every insert:
delivered at commit (never for a rollback), it wakes listening relays without a poll, and
several inserts of one transaction make one notification.

Revision ID: 0002_outbox
Revises: 0001_inbox
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_outbox"
down_revision = "0001_inbox"
branch_labels = None
depends_on = None

_NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION pipeline_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pipeline_outbox', '');
    RETURN NULL;
END
$$
"""
_NOTIFY_TRIGGER = """
CREATE TRIGGER pipeline_outbox_notify AFTER INSERT ON pipeline_outbox
FOR EACH STATEMENT EXECUTE FUNCTION pipeline_outbox_notify()
"""


def upgrade() -> None:
    op.create_table(
        "pipeline_outbox",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("aggregate_type", sa.String(255), nullable=False),
        sa.Column("aggregate_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=True),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("position", name="pk_pipeline_outbox"),
        sa.UniqueConstraint("event_id", name="uq_pipeline_outbox_event_id"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_pipeline_outbox_unpublished",
        "pipeline_outbox",
        ["position", "aggregate_type", "aggregate_id"],
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.create_index(
        "ix_pipeline_outbox_published_at",
        "pipeline_outbox",
        ["published_at"],
        postgresql_where=sa.text("published_at IS NOT NULL"),
        sqlite_where=sa.text("published_at IS NOT NULL"),
    )
    op.create_table(
        "pipeline_outbox_lease",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_pipeline_outbox_lease"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_NOTIFY_FUNCTION)
        op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS pipeline_outbox_notify ON pipeline_outbox")
        op.execute("DROP FUNCTION IF EXISTS pipeline_outbox_notify()")
    op.drop_table("pipeline_outbox_lease")
    op.drop_index("ix_pipeline_outbox_published_at", "pipeline_outbox")
    op.drop_index("ix_pipeline_outbox_unpublished", "pipeline_outbox")
    op.drop_table("pipeline_outbox")
