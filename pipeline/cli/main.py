"""The ``pipeline`` command: one Typer application with a sub-command per concern.

Settings are read once here and handed to the sub-commands through the Typer context.
Every expected failure is a :class:`pipeline.errors.PipelineError`, printed as one line with a
non-zero exit code; a traceback means a bug.

The command modules import what their commands use (Kafka, SQLAlchemy, Elasticsearch, aiohttp,
Faust) inside the commands: Typer needs only their signatures, so ``pipeline --help`` loads none
of it (tests/unit/pipeline/cli/test_main.py holds them to that).
"""

from __future__ import annotations

import sys
from importlib import metadata
from typing import Annotated

import typer
from pydantic import ValidationError

from pipeline.cli import dashboards as dashboards_cli
from pipeline.cli import dlq as dlq_cli
from pipeline.cli import gateway as gateway_cli
from pipeline.cli import logs as logs_cli
from pipeline.cli import outbox as outbox_cli
from pipeline.cli import saga as saga_cli
from pipeline.cli import stack as stack_cli
from pipeline.cli import topics as topics_cli
from pipeline.cli.console import stderr_console
from pipeline.cli.consume import consume
from pipeline.cli.demo import demo
from pipeline.cli.help import plain_help
from pipeline.cli.process import process
from pipeline.cli.produce import produce
from pipeline.cli.record import record
from pipeline.cli.replay import replay
from pipeline.default_database import default_database_url
from pipeline.errors import PipelineError
from pipeline.settings import PipelineSettings

app = typer.Typer(
    name="pipeline",
    help="Event-streaming pipeline on Apache Kafka and Elasticsearch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # -h as well as --help, on every command (sub-commands inherit it).
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(stack_cli.app, name="stack")
app.add_typer(topics_cli.app, name="topics")
app.add_typer(outbox_cli.app, name="outbox")
app.add_typer(dashboards_cli.app, name="dashboards")
app.add_typer(logs_cli.app, name="logs")
app.add_typer(dlq_cli.app, name="dlq")
app.add_typer(saga_cli.app, name="saga")
app.add_typer(gateway_cli.app, name="gateway")
app.command()(demo)
app.command()(produce)
app.command()(consume)
app.command()(process)
app.command()(record)
app.command()(replay)
plain_help(app)

_stderr = stderr_console()


#: The distribution this command belongs to (pyproject.toml's project name).
DISTRIBUTION = "event-pipeline"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"pipeline {metadata.version(DISTRIBUTION)}")
        raise typer.Exit()


@app.callback()
def _load_settings(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Event-streaming pipeline on Apache Kafka and Elasticsearch.

    Configuration comes from PIPELINE_* environment variables (nested with __), e.g.
    PIPELINE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092. The database is
    PIPELINE_DATABASE__URL, by default the SQLite file pipeline.db in the
    stack's home (PIPELINE_STACK__HOME); programs that use it say which.
    """
    try:
        settings = PipelineSettings()
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PipelineError(f"invalid setting {where}: {first['msg']}") from None
    ctx.obj = with_default_database(settings)


def with_default_database(settings: PipelineSettings) -> PipelineSettings:
    """``settings`` whose database, unless one is configured, is the default one: the SQLite
    file in the stack's home, the same whatever the current folder."""
    if "url" in settings.database.model_fields_set:
        return settings
    database = settings.database.model_copy(
        update={"url": default_database_url(settings.stack.home)}
    )
    return settings.model_copy(update={"database": database})


def run() -> None:
    """Console entry point: expected errors become one line on stderr and exit code 2.

    Typer's standalone mode already answers usage errors that way and exits by itself.
    """
    try:
        app()
    except PipelineError as error:
        _stderr.print(f"[red]error:[/red] {error}", highlight=False)
        sys.exit(2)
