"""``pipeline db status`` and ``pipeline db migrate``: the pipeline's tables in its database.

Every program that uses the database brings its schema up to date as it starts
(:func:`pipeline.database.migrate`), so nothing here is needed to run the pipeline. These are
for an operator who rolls out a new version: see where a database stands, and migrate it
before the new programs start, with a role that may create tables (programs that then find the
schema current change nothing in it, so they can run as a role that may not).

``status`` only reads: it never creates a database nor migrates one. Messages go to stderr,
the table to stdout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from pipeline.cli.console import stderr_console, stdout_console
from pipeline.cli.process import announce_database
from pipeline.errors import PipelineError
from pipeline.plurals import counted
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from pipeline.database import SchemaStatus

#: ``pipeline db status``: the schema is behind (``pipeline db migrate`` would change it).
EXIT_BEHIND = 3

app = typer.Typer(help="The pipeline's tables in its database: where they stand, migrating them.")


def _settings(ctx: typer.Context) -> PipelineSettings:
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings), "read once by the `pipeline` entry point"
    return settings


def status_table(status: SchemaStatus, head: str) -> Table:
    """The schema's revision, the newest this version knows, and each migration not applied."""
    table = Table(title="schema", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("revision", ", ".join(status.found) or "none (no program has used it yet)")
    table.add_row("newest known", head)
    if status.pending:
        table.add_row(
            "to migrate",
            "\n".join(f"{revision}: {what}" for revision, what in status.pending),
        )
    return table


@app.command()
def status(ctx: typer.Context) -> None:
    """Where the database's schema stands: its revision, the newest this version knows, and the
    migrations not applied yet.

    Only reads. Exit code 0: up to date; 3: migrations wait (`pipeline db migrate`, or any
    program's start, applies them); 2: an error (no such database, cannot reach it, or a newer
    version of the pipeline migrated it).

    Examples:
      pipeline db status
      PIPELINE_DATABASE__URL=postgresql+psycopg://app@db.internal/orders pipeline db status
    """
    from pipeline.database import HEAD_REVISION, build_engine, schema_status, url_label

    settings = _settings(ctx)
    announce_database(settings)
    engine = build_engine(settings.database, pool_size=1, must_exist=True)
    try:
        found = schema_status(engine)
    finally:
        engine.dispose()
    if found.unknown:
        raise PipelineError(
            f"{url_label(engine.url)} is at schema revision {', '.join(found.unknown)}, which "
            f"this version of the pipeline does not know (its newest is {HEAD_REVISION}): a "
            "newer version migrated it"
        )
    stdout_console().print(status_table(found, HEAD_REVISION))
    if found.pending:
        stderr_console().print(
            f"{counted(len(found.pending), 'migration')} to apply: pipeline db migrate",
            highlight=False,
        )
        raise typer.Exit(EXIT_BEHIND)


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Bring the database's schema to the newest revision, as every program does at its start.

    For a roll-out: migrate first, with a role that may create tables, then start the new
    version's programs. Safe while programs run and when several migrate at once (one does it,
    the others find it done). Creates the SQLite file if there is none.

    Examples:
      pipeline db migrate
      PIPELINE_DATABASE__URL=postgresql+psycopg://owner@db.internal/orders pipeline db migrate
    """
    from pipeline.database import HEAD_REVISION, build_engine, create_sqlite_folder
    from pipeline.database import migrate as migrate_schema

    settings = _settings(ctx)
    announce_database(settings)
    create_sqlite_folder(settings.database, settings.stack.home)
    engine = build_engine(settings.database, pool_size=1)
    try:
        migrated_from = migrate_schema(engine)
    finally:
        engine.dispose()
    out = stdout_console()
    if migrated_from is None:
        out.print(f"schema already at {HEAD_REVISION}: nothing to do", highlight=False)
    else:
        before = ", ".join(migrated_from) or "nothing (a new database)"
        out.print(f"schema migrated from {before} to {HEAD_REVISION}", highlight=False)
