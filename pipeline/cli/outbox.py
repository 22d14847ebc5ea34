"""``pipeline outbox relay`` and ``pipeline outbox status``: the transactional outbox.

Both first say which database they use. ``relay`` brings its schema up to date
(``pipeline.database.migrate``), so it works on a fresh database; ``status`` only reads: it
never creates or migrates a database, and says so in one line when there is no outbox there.

Tables go to stdout, messages and log lines to stderr. ``relay --once`` logs only warnings and
errors to stderr unless ``PIPELINE_LOGS__LEVEL`` is set (every line still goes to the ``logs``
topic), so its summary table is not lost among them. SQLAlchemy and the relay are imported by
the commands themselves: ``pipeline --help`` needs only the signatures.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from pipeline.cli.console import announcing_kafka, stderr_console, stdout_console
from pipeline.cli.process import announce_database
from pipeline.errors import PipelineError
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from pipeline.outbox.table import OutboxStatus
    from producers.outbox_relay import RelayTotals

EXIT_OK = 0
EXIT_UNPUBLISHED = 3

app = typer.Typer(help="The transactional outbox: relay it to Kafka, show its status.")

_err = stderr_console()


def _settings(ctx: typer.Context) -> PipelineSettings:
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings), "read once by the `pipeline` entry point"
    return settings


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def status_table(status: OutboxStatus, *, published_kept: bool = True) -> Table:
    """The status as a rich table: one row per topic and a total. Without ``published_kept``
    (``outbox.retention_s`` 0) a caption says why nothing shows as published."""
    caption = (
        None
        if published_kept
        else "published rows are deleted as they are published (PIPELINE_OUTBOX__RETENTION_S=0),"
        " so none count here: each relay counts its own (pipeline_outbox_published_total)"
    )
    table = Table(title="outbox", caption=caption)
    table.add_column("topic")
    table.add_column("backlog", justify="right")
    table.add_column("oldest unpublished", justify="right")
    table.add_column("published last minute", justify="right")
    table.add_column("rate", justify="right")
    for topic in status.topics:
        table.add_row(
            topic.topic,
            f"{topic.backlog:,}",
            _age(topic.oldest_unpublished_age_s),
            f"{topic.published_last_minute:,}",
            f"{topic.published_last_minute / 60:,.1f}/s",
        )
    table.add_row(
        "[bold]total[/bold]",
        f"[bold]{status.backlog:,}[/bold]",
        _age(status.oldest_unpublished_age_s),
        f"{status.published_last_minute:,}",
        f"{status.publish_rate_per_s:,.1f}/s",
        end_section=True,
    )
    return table


@app.command()
def status(ctx: typer.Context) -> None:
    """Backlog, oldest unpublished age and publish rate of the outbox, per topic.

    Only reads the database: one that does not exist, or has no outbox yet, is a one-line
    error (exit code 2).
    """
    from sqlalchemy.exc import DBAPIError

    from pipeline.database import build_engine, url_label
    from pipeline.outbox.table import outbox_status

    settings = _settings(ctx)
    announce_database(settings)
    engine = build_engine(settings.database, pool_size=1, must_exist=True)
    where = url_label(engine.url)
    try:
        status = outbox_status(engine)
    except DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        if 'relation "pipeline_outbox" does not exist' in reason or "no such table" in reason:
            raise PipelineError(
                f"no outbox in {where}: no program has written to this database yet"
            ) from None
        raise PipelineError(f"cannot read the outbox from {where}: {reason}") from None
    finally:
        engine.dispose()
    stdout_console().print(status_table(status, published_kept=settings.outbox.retention_s > 0))


def summary_table(totals: RelayTotals) -> Table:
    """What a relay run did, as a rich table."""
    table = Table(title="outbox relay", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("published (acknowledged and marked)", f"{totals.published:,}")
    table.add_row("left unpublished (tried again later)", f"{totals.failed:,}")
    if totals.held:
        table.add_row("  of them held back (not published)", f"{totals.held:,}")
    table.add_row("batches", f"{totals.batches:,}")
    table.add_row("expired rows deleted", f"{totals.deleted:,}")
    return table


def _console_logs_from(level: int) -> None:
    """Let only records of ``level`` and above through to the console (stderr); the Kafka
    handler (not a stream handler) keeps the configured level."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(level)


def _check_kafka(settings: PipelineSettings) -> None:
    """Kafka answering, or one line and exit code 2 at once, as every command that uses it: the
    relay's producer alone would only log librdkafka's connection failures, and with --once
    wait for the delivery timeout (two minutes) before saying anything."""
    from pipeline.kafka.clients import build_admin
    from pipeline.topics.admin import list_cluster_topics

    bootstrap = settings.kafka.bootstrap_servers
    with announcing_kafka(bootstrap):
        list_cluster_topics(build_admin(settings.kafka), bootstrap=bootstrap)


@app.command()
def relay(
    ctx: typer.Context,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            max=1_000_000,
            help="Rows per batch (default: PIPELINE_OUTBOX__BATCH_SIZE, else 2000).",
        ),
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            "--poll-interval",
            min=0.001,
            max=86_400,
            help="Seconds an idle relay waits before looking again (default: "
            "PIPELINE_OUTBOX__POLL_INTERVAL_S, else 1).",
        ),
    ] = None,
    no_listen: Annotated[
        bool,
        typer.Option("--no-listen", help="Do not LISTEN for new rows (PostgreSQL): poll only."),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", min=1, max=65535, help="Serve Prometheus metrics here."),
    ] = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Publish what can be claimed now, then exit."),
    ] = False,
) -> None:
    """Publish committed outbox rows to Kafka until SIGTERM (or with --once, until done).

    Rows are marked published only after Kafka acknowledged them; per aggregate they are
    published in the order they were inserted (their position). On PostgreSQL several relays
    may run at once; on SQLite one holds a lease and the others wait.

    The summary table goes to stdout. With --once, only warnings and errors are logged to
    stderr (unless PIPELINE_LOGS__LEVEL is set); every log line still goes to the logs topic.

    Exit codes: 0 done; 2 usage or setup error; 3 (--once) some events were not
    acknowledged, or were held back (their topic does not exist, they are too large), and
    stay unpublished, or another relay holds the lease (SQLite) and nothing was published.

    Examples:
      pipeline outbox relay --metrics-port 9420    # the outbox at PIPELINE_DATABASE__URL
      pipeline outbox relay --once                 # publishes what is there now, then exit
    """
    from pipeline.database import create_sqlite_folder, new_sqlite_file
    from pipeline.logs import configure_logging
    from producers.outbox_relay import run_relay

    settings = _settings(ctx)
    overrides: dict[str, object] = {}
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    if poll_interval is not None:
        overrides["poll_interval_s"] = poll_interval
    if no_listen:
        overrides["listen"] = False
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    if overrides:
        outbox = settings.outbox.model_copy(update=overrides)
        settings = settings.model_copy(update={"outbox": outbox})
    configure_logging(settings, "outbox-relay", flush_on_sigterm=False)  # SIGTERM: its own
    if once and "level" not in settings.logs.model_fields_set:
        _console_logs_from(logging.WARNING)
    announce_database(settings)
    made = new_sqlite_file(settings.database)
    create_sqlite_folder(settings.database, settings.stack.home)
    _check_kafka(settings)
    if made is not None:
        # Not refused: the relay may well start before the service that writes the outbox.
        # But a mistyped path would otherwise relay nothing, in silence, for good.
        logging.getLogger("pipeline.outbox").warning(
            "no database at %s yet: the relay makes an empty one and publishes what programs "
            "write to its outbox; if yours write to another, set PIPELINE_DATABASE__URL to it",
            made,
        )
    outbox = settings.outbox
    woken = (
        f"woken by LISTEN/NOTIFY, else looking every {outbox.poll_interval_s:g} s"
        if outbox.listen and settings.database.url.startswith("postgresql")
        else f"looking every {outbox.poll_interval_s:g} s when idle"
    )

    def say_started(_relay: object) -> None:
        # Once the relay exists and SIGTERM is its own: from here on, it stops cleanly.
        if not once:
            logging.getLogger("pipeline.outbox").info(
                "relaying the outbox to Kafka at %s: batches of up to %s rows, %s; "
                "Ctrl-C or SIGTERM stops it after the current batch",
                settings.kafka.bootstrap_servers,
                f"{outbox.batch_size:,}",
                woken,
            )

    totals = run_relay(settings, once=once, handle_signals=True, on_start=say_started)
    stdout_console().print(summary_table(totals))
    if totals.lease_holder is not None and once:
        # A warning, so that a run from cron (its stderr no terminal: logged as JSON, and
        # --once logs warnings only) says it too; and exit 3: the rows stay unpublished.
        logging.getLogger("pipeline.outbox").warning(
            "published nothing: the outbox lease is held by %s (one relay at a time publishes "
            "from SQLite). Run again once it stops; one that stopped without releasing the "
            "lease (killed, say) holds it up to outbox.lease_s (%g s) after its last renewal",
            totals.lease_holder,
            outbox.lease_s,
        )
        sys.exit(EXIT_UNPUBLISHED)
    if totals.lease_holder is not None:
        _err.print(f"[yellow]the outbox lease is held by {totals.lease_holder}[/yellow]")
    if once and totals.failed:
        sys.exit(EXIT_UNPUBLISHED)
