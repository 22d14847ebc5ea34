"""The secret an API key had before its last rotation, accepted until a given moment.

``pipeline gateway keys rotate NAME`` gives a key a new secret under the same name (the same
client: its rate limit, Idempotency-Key scope and request types) and keeps the digest of the
secret before in ``previous_secret_sha256`` until ``previous_until`` (the grace period, so that
clients can switch without a refusal); ``rotated_at`` says when. All three are NULL on a key
never rotated. Only columns are added, all nullable: gateways of the version before keep
reading and checking the keys as they did (they know only the current secret).

Revision ID: 0009_gateway_keys_rotation
Revises: 0008_sagas_namespace
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_gateway_keys_rotation"
down_revision = "0008_sagas_namespace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "pipeline_gateway_keys",
        sa.Column("previous_secret_sha256", sa.String(64), nullable=True),
    )
    op.add_column(
        "pipeline_gateway_keys",
        sa.Column("previous_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "pipeline_gateway_keys",
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("pipeline_gateway_keys") as batch:
        batch.drop_column("rotated_at")
        batch.drop_column("previous_until")
        batch.drop_column("previous_secret_sha256")
