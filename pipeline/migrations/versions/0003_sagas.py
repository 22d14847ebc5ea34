"""Saga instances (the orchestrator's) and the participants' log of saga commands handled.

``pipeline_sagas``: one row per instance, its whole state as JSON, the status and the next
deadline as columns of their own so the orchestrator finds due sagas by index, and a revision
for optimistic concurrency (a reply and a deadline of one saga never both win).
``pipeline_saga_steps``: per participant service, the outcome of each (saga, step, kind) it
handled, so a command sent again is answered from the log instead of being done twice, and a
compensation of an action that never ran here is answered at once.

Revision ID: 0003_sagas
Revises: 0002_outbox
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_sagas"
down_revision = "0002_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_sagas",
        sa.Column("saga_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("next_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("saga_id", name="pk_pipeline_sagas"),
    )
    op.create_index("ix_pipeline_sagas_status", "pipeline_sagas", ["status", "updated_at"])
    op.create_index("ix_pipeline_sagas_next_deadline", "pipeline_sagas", ["next_deadline"])
    op.create_table(
        "pipeline_saga_steps",
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("saga_id", sa.String(255), nullable=False),
        sa.Column("step", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("reply", sa.JSON, nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "service", "saga_id", "step", "kind", name="pk_pipeline_saga_steps"
        ),
    )


def downgrade() -> None:
    op.drop_table("pipeline_saga_steps")
    op.drop_index("ix_pipeline_sagas_next_deadline", table_name="pipeline_sagas")
    op.drop_index("ix_pipeline_sagas_status", table_name="pipeline_sagas")
    op.drop_table("pipeline_sagas")
