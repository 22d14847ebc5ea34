"""An index of the participants' log by service and time handled, for deleting the old rows.

``pipeline_saga_steps`` rows older than ``sagas.step_log_retention_s`` (when it is set) are
deleted by each participant, oldest first; without this index each round would read the whole
log of the service.

Revision ID: 0005_saga_steps_handled_at
Revises: 0004_gateway
"""

from __future__ import annotations

from alembic import op

revision = "0005_saga_steps_handled_at"
down_revision = "0004_gateway"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_pipeline_saga_steps_handled_at", "pipeline_saga_steps", ["service", "handled_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_pipeline_saga_steps_handled_at", table_name="pipeline_saga_steps")
