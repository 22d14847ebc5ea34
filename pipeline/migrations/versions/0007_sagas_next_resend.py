"""Each saga's earliest backoff in a column of its own, beside its earliest deadline of any kind.

A step's timeout fires only once the replies sent before its deadline have been read (the
orchestrator's replies read-through time, see pipeline/processing/read_through.py); a backoff
fires at its time whatever the replies. The orchestrator finds both by index:
``next_deadline <= read_through OR next_resend <= now``. Sagas saved before this revision get
their ``next_deadline`` as ``next_resend``: the orchestrator looks at such a saga when that time
comes, fires what is due, and when nothing is (its timeout waits for the replies), sets both
columns from its state, so that it is not looked at again before its time.

Revision ID: 0007_sagas_next_resend
Revises: 0006_parked_keys_last_event
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_sagas_next_resend"
down_revision = "0006_parked_keys_last_event"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "pipeline_sagas", sa.Column("next_resend", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute("UPDATE pipeline_sagas SET next_resend = next_deadline")
    op.create_index("ix_pipeline_sagas_next_resend", "pipeline_sagas", ["next_resend"])


def downgrade() -> None:
    op.drop_index("ix_pipeline_sagas_next_resend", table_name="pipeline_sagas")
    with op.batch_alter_table("pipeline_sagas") as batch:
        batch.drop_column("next_resend")
