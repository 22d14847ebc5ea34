"""The gateway's API keys and its Idempotency-Key store shared by every gateway process.

``pipeline_gateway_keys``: one row per API key (``pipeline gateway keys add``): its unique name,
the public id a request's key is looked up by, the SHA-256 digest of its secret part (never the
key itself), the request types it may send, when it was created and, once revoked, when.
``pipeline_gateway_idempotency``: one row per (client, Idempotency-Key) while it is claimed or
its answer is remembered: the fingerprint of the first body, the claimant's token, the answer
once there is one, and when the row expires.

Revision ID: 0004_gateway
Revises: 0003_sagas
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_gateway"
down_revision = "0003_sagas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_gateway_keys",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("request_types", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_pipeline_gateway_keys"),
        sa.UniqueConstraint("key_id", name="uq_pipeline_gateway_keys_key_id"),
    )
    op.create_table(
        "pipeline_gateway_idempotency",
        sa.Column("client", sa.String(255), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("claim_token", sa.String(32), nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "client", "idempotency_key", name="pk_pipeline_gateway_idempotency"
        ),
    )
    op.create_index(
        "ix_pipeline_gateway_idempotency_expires_at",
        "pipeline_gateway_idempotency",
        ["expires_at"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_pipeline_gateway_idempotency_expires_at", table_name="pipeline_gateway_idempotency"
    )
    op.drop_table("pipeline_gateway_idempotency")
    op.drop_table("pipeline_gateway_keys")
