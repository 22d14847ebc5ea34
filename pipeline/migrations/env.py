"""Alembic's entry point: runs the migrations on the connection :func:`pipeline.database.migrate`
hands over (there is no alembic.ini; the project never migrates from a URL in a file)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
