"""Each saga's topic namespace in a column of its own.

Several saga systems (each with its own topic namespace, pipeline.sagas.SagaTopics) may share a
database: each orchestrator finds due, counts, warns about and deletes only the sagas of its own
namespace, by this column. Sagas saved before it get theirs from their stored state, which names
the namespace when it is not the default one (``saga``). The column may be NULL: a saga that a
process of the version before inserts during a rolling deploy has none until an orchestrator
saves it or finds it due (every orchestrator looks at such a saga when it is due, and sets the
column from its state). A default would have put it in the default namespace, out of its own
system's sight.

Revision ID: 0008_sagas_namespace
Revises: 0007_sagas_next_resend
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0008_sagas_namespace"
down_revision = "0007_sagas_next_resend"
branch_labels = None
depends_on = None

#: The default namespace as this revision knows it (a migration does not follow the code).
_DEFAULT_NAMESPACE = "saga"


def upgrade() -> None:
    op.add_column("pipeline_sagas", sa.Column("namespace", sa.String(255), nullable=True))
    sagas = sa.table(
        "pipeline_sagas",
        sa.column("saga_id", sa.String),
        sa.column("state", sa.Text),
        sa.column("namespace", sa.String),
    )
    connection = op.get_bind()
    connection.execute(sa.update(sagas).values(namespace=_DEFAULT_NAMESPACE))
    # Only a saga of another namespace names one in its state: those few rows are read.
    named = connection.execute(
        sa.select(sagas.c.saga_id, sagas.c.state).where(
            sa.cast(sagas.c.state, sa.Text).like('%"namespace"%')
        )
    ).all()
    for saga_id, state in named:
        namespace = (json.loads(state) if isinstance(state, str) else state).get("namespace")
        if isinstance(namespace, str) and namespace != _DEFAULT_NAMESPACE:
            connection.execute(
                sa.update(sagas).where(sagas.c.saga_id == saga_id).values(namespace=namespace)
            )


def downgrade() -> None:
    with op.batch_alter_table("pipeline_sagas") as batch:
        batch.drop_column("namespace")
