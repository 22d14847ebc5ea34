"""The latest dead letter of a parked key, so that a redrive lets the key go only past all of them.

A key's later events are dead-lettered behind its first dead letter (``key_parked``). One that
was still waiting in the topic when an operator's redrive read the dead-letter topic is
dead-lettered after that read: the redrive's last record of the key must then leave the key
parked (its events would be applied past that dead letter). ``last_event_id`` is the event id
of the key's latest dead letter; NULL on rows parked before this revision (such a key is let go
as before).

Revision ID: 0006_parked_keys_last_event
Revises: 0005_saga_steps_handled_at
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_parked_keys_last_event"
down_revision = "0005_saga_steps_handled_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pipeline_parked_keys", sa.Column("last_event_id", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipeline_parked_keys") as batch:
        batch.drop_column("last_event_id")
