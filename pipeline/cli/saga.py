"""``pipeline saga list | show | retry | resolve | prune | graph``: sagas for operators.

``list`` and ``show`` only read the database (they never create or migrate it); ``retry`` and
``resolve`` change stuck sagas (one, or several each in its own transaction) through the
orchestrator's logic, so their commands and events go out through the outbox like any other
transition; ``prune`` deletes ended sagas past their retention, as the orchestrator does by
itself. The saga definitions come from ``--registry MODULE:ATTRIBUTE`` (default: the demo's
``consumers.order_saga:registry``). What ``list`` prints is :mod:`pipeline.cli.saga_list`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.checks import stored_name, utf8_text
from pipeline.cli.console import stderr_console, stdout_console
from pipeline.cli.plurals import counted
from pipeline.cli.process import announce_database, load_attribute
from pipeline.cli.saga_list import (
    ids_only,
    left_out_line,
    matching,
    more_than_shown,
    sagas_table,
    shown,
    when,
)
from pipeline.errors import PipelineError
from pipeline.sagas.state import STUCK, TERMINAL
from pipeline.settings import PipelineSettings
from pipeline.topics.catalogue import SAGA_NAMESPACE

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from pipeline.sagas.state import SagaState

app = typer.Typer(
    help="Sagas: list them by state, show one's timeline, retry or resolve, prune, graph."
)

DEMO_REGISTRY = "consumers.order_saga:registry"
_STATES = sorted({"running", "compensating", "confirming", *TERMINAL, *STUCK})

RegistryOption = Annotated[
    str,
    typer.Option(
        "--registry",
        metavar="MODULE:ATTRIBUTE",
        help="Where the SagaRegistry of your definitions is.",
    ),
]


def _settings(ctx: typer.Context) -> PipelineSettings:
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings), "read once by the `pipeline` entry point"
    return settings


@contextmanager
def _database(ctx: typer.Context) -> Iterator[Engine]:
    from sqlalchemy.exc import DBAPIError

    from pipeline.database import build_engine, url_label

    settings = _settings(ctx)
    announce_database(settings)
    engine = build_engine(settings.database, pool_size=1, must_exist=True)
    where = url_label(engine.url)
    try:
        yield engine
    except DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        missing = _missing_from_schema(error, reason)
        if missing == "table":
            raise PipelineError(
                f"no sagas in {where}: no program that runs sagas has used this database yet"
            ) from None
        if missing == "column":
            older = _older_schema(engine, where, reason)
            if older is not None:
                raise PipelineError(older) from None
        raise PipelineError(f"cannot read sagas from {where}: {reason}") from None
    finally:
        engine.dispose()


#: PostgreSQL's SQLSTATEs of a statement naming a table, or a column, the database lacks.
_UNDEFINED_TABLE = "42P01"
_UNDEFINED_COLUMN = "42703"


def _missing_from_schema(error: Exception, reason: str) -> Literal["table", "column"] | None:
    """What of the schema a failed statement found missing: a table (no program that runs
    sagas has migrated the database yet), a column (an older version migrated it), or
    neither."""
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    if sqlstate == _UNDEFINED_TABLE or reason.startswith("no such table"):
        return "table"
    if sqlstate == _UNDEFINED_COLUMN or reason.startswith("no such column"):
        return "column"
    return None


def _older_schema(engine: Engine, where: str, reason: str) -> str | None:
    """The message for a database whose sagas' table lacks a column this version reads: its
    schema is at an older revision, which any program of this version that writes to the
    database migrates when it starts (``list`` and ``show`` only read, they never migrate).
    ``None`` when the database is at this version's revision all the same (changed by hand:
    the driver's words are all there is to say)."""
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline.database import HEAD_REVISION, current_revision

    try:
        revision = current_revision(engine)
    except (SQLAlchemyError, PipelineError):  # the column is what is known to be missing
        revision = None
    if revision == HEAD_REVISION:
        return None
    at = "" if revision is None else f" (at revision {revision}, this version's is {HEAD_REVISION})"
    return (
        f"the schema of {where} is older than this version of the pipeline{at}: {reason}; "
        "migrate it by starting a program of this version that writes to it (`pipeline "
        "process`, `pipeline outbox relay` or `pipeline gateway` migrate it when they start, "
        "see docs/sagas.md), then run this again"
    )


def _seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


@app.command("list")
def list_command(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option("--state", "-s", help=f"Only sagas in this state: {', '.join(_STATES)}."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Only this saga.", callback=stored_name)
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            help="Only the sagas of this topic namespace (one saga system's, in a database "
            "several share; the default one is saga).",
        ),
    ] = None,
    max_rows: Annotated[
        int,
        typer.Option(
            "--max",
            "-n",
            min=1,
            max=1_000_000,
            help="At most this many, the most recently changed first (a line says how many "
            "more match).",
        ),
    ] = 50,
    ids: Annotated[
        bool,
        typer.Option(
            "--ids-only",
            help="Only the sagas' ids, one a line, for a script (that more match than --max "
            "is said on stderr).",
        ),
    ] = False,
) -> None:
    """Sagas, the most recently changed first, and how many there are in each state.

    --ids-only prints the ids alone, one a line, for a script; xargs -r runs nothing when none
    match (without -r, GNU xargs runs the command once, with no id).

    Examples:
      pipeline saga list --state compensation_failed
      pipeline saga list --name CreateOrder --max 10
      pipeline saga show SAGA_ID            # then one saga's timeline
      pipeline saga list -s compensation_failed --ids-only -n 1000 | xargs -r pipeline saga retry
    """
    from pipeline.sagas.store import count_by_status, list_sagas
    from pipeline.sagas.topics import SagaTopics

    if state is not None and state not in _STATES:
        raise PipelineError(f"unknown state {state!r}: one of {', '.join(_STATES)}")
    if namespace is not None:
        try:
            SagaTopics(namespace)  # one no saga system can have is a typo, not an empty list
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--namespace") from None
    with _database(ctx) as engine, engine.connect() as connection:
        rows = list_sagas(connection, status=state, name=name, namespace=namespace, limit=max_rows)
        counts = count_by_status(connection, name=name, namespace=namespace)
    # At least those listed: a saga may have changed state between the two statements.
    more = more_than_shown(
        len(rows),
        max(matching(counts, state), len(rows)),
        state=state,
        name=name,
        namespace=namespace,
    )
    if ids:
        typer.echo(ids_only(rows), nl=False)
        if more is not None:
            stderr_console().print(f"warning: {more}")
        return
    console = stdout_console()
    table, left_out = sagas_table(rows, console.width)
    console.print(table)
    for line in (left_out_line(left_out), more):
        if line is not None:
            console.print(line)
    total = sum(counts.values())
    by_state = ", ".join(f"{status} {count:,}" for status, count in sorted(counts.items()))
    noun = "saga" if name is None else f"{shown(name)} saga"
    where = "" if namespace is None else f" of namespace {shown(namespace)}"
    console.print(f"{counted(total, noun)}{where} in all: {by_state or 'none'}")


#: Step states whose ``finished_at`` is the success that settled the step: its action's (a
#: confirm does not move it), or its compensation's. A step that failed or timed out, or whose
#: compensation is still going or failed, has no time to show (docs/sagas.md).
_SETTLED = frozenset({"succeeded", "confirming", "confirmed", "confirmation_failed", "compensated"})


def _steps_table(state: SagaState) -> Table:
    table = Table(title="steps")
    for column in ("step", "state", "attempts", "confirm attempts", "undo attempts", "took"):
        table.add_column(column)
    for name, step in state.steps.items():
        took = (
            _seconds((step.finished_at - step.started_at).total_seconds())
            if step.started_at and step.finished_at and step.status in _SETTLED
            else "-"
        )
        table.add_row(
            shown(name),
            step.status,
            str(step.attempts),
            str(step.confirm_attempts),
            str(step.compensation_attempts),
            took,
        )
    return table


def _timeline(state: SagaState) -> Table:
    table = Table(title="timeline")
    for column in ("at", "what", "step", "attempt", "detail"):
        table.add_column(column)
    for entry in state.history:
        offset = (entry.at - state.started_at).total_seconds()
        table.add_row(
            f"+{_seconds(offset)}",
            entry.what.replace("_", " "),
            shown(entry.step or ""),
            "" if entry.attempt is None else str(entry.attempt),
            shown(entry.detail or ""),
        )
    return table


@app.command()
def show(
    ctx: typer.Context,
    saga_id: Annotated[str, typer.Argument(help="The saga's id.", callback=stored_name)],
) -> None:
    """One saga: its state, its data, each step, and its timeline with every attempt.

    Only reads. A stuck saga's page ends with the commands that act on it (retry, resolve).

    Examples:
      pipeline saga show ORDER-17
      pipeline logs search --correlation-id ORDER-17 --since 1d   # and its log lines
    """
    from pipeline.sagas.machine import shown_saga_id
    from pipeline.sagas.store import load_saga

    with _database(ctx) as engine, engine.connect() as connection:
        stored = load_saga(connection, saga_id)
    if stored is None:
        raise PipelineError(f"no saga {shown_saga_id(saga_id)} in this database")
    state = stored.state
    console = stdout_console()
    console.print(
        f"[bold]{shown(state.name)} v{state.version}[/bold] {shown(state.saga_id)}: {state.status}"
    )
    if state.namespace != SAGA_NAMESPACE:  # the demo's and most systems' own: not worth a line
        console.print(f"topics: {shown(state.namespace)}.* (its own namespace)")
    if state.reason:
        console.print(f"reason: {shown(state.reason)}")
    console.print(f"data: {shown(json.dumps(state.data, ensure_ascii=False))}", highlight=False)
    console.print(_steps_table(state))
    console.print(_timeline(state))
    if state.status in STUCK:
        registry = "" if _in_demo_registry(state.name) else " --registry MODULE:ATTRIBUTE"
        console.print(
            f"waiting for an operator: `pipeline saga retry {shown(saga_id)}{registry}` or "
            f"`pipeline saga resolve {shown(saga_id)}{registry} --note ...`"
            + (f" (the registry that defines {state.name})" if registry else "")
        )


def _in_demo_registry(name: str) -> bool:
    """Whether the demo's registry, the default of ``--registry``, defines saga ``name``."""
    from pipeline.sagas.definition import SagaRegistry

    try:
        demo = load_attribute(DEMO_REGISTRY, SagaRegistry, what="REGISTRY", example=DEMO_REGISTRY)
    except PipelineError:
        return False
    return name in demo.names


def _operate(ctx: typer.Context, registry_spec: str, saga_ids: list[str], note: str | None) -> None:
    """Retry (``note`` ``None``) or resolve each saga, each in its own transaction, and say
    what it is now, one line each. One id: its failure is the command's error, as any. Several:
    a saga that fails is an error line of its own, the others go on, and the exit code is 1
    (docs/exit-codes.md); a database that fails stops them all, as a setup error."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session

    from pipeline.sagas import SagaRegistry
    from pipeline.sagas.orchestrator import SagaOrchestrator

    registry = load_attribute(registry_spec, SagaRegistry, what="REGISTRY", example=DEMO_REGISTRY)
    orchestrator = SagaOrchestrator(registry)
    saga_ids = list(dict.fromkeys(saga_ids))  # each saga once, in the order given
    several = len(saga_ids) > 1
    done = "retried" if note is None else "resolved"
    failed = 0
    with _database(ctx) as engine:
        for index, saga_id in enumerate(saga_ids):
            try:
                with _registry_hint(registry_spec), Session(engine) as session, session.begin():
                    state = (
                        orchestrator.retry(session, saga_id)
                        if note is None
                        else orchestrator.resolve(session, saga_id, note)
                    )
            except PipelineError as error:
                if not several:
                    raise
                _say_error(_naming(saga_id, str(error)))
                failed += 1
                continue
            except DBAPIError:
                if several:
                    left = counted(len(saga_ids) - index, "saga")
                    _say_error(
                        f"{left} not {done}, from {_shown_id(saga_id)} on: the database failed"
                    )
                raise
            again = " again" if note is None else ""
            stdout_console().print(f"saga {shown(saga_id)} is {state.status}{again}")
    if failed:
        _say_error(f"{failed:,} of {counted(len(saga_ids), 'saga')} not {done}")
        raise typer.Exit(1)


def _shown_id(saga_id: str) -> str:
    from pipeline.sagas.machine import shown_saga_id

    return shown_saga_id(saga_id)


def _naming(saga_id: str, message: str) -> str:
    """An error's ``message`` as it names the saga it is about: most do already."""
    shown_id = _shown_id(saga_id)
    return message if shown_id in message else f"saga {shown_id}: {message}"


def _say_error(message: str) -> None:
    """One error line on stderr, as the command's own error would be, while it goes on."""
    from pipeline.logs.redact import redact

    stderr_console().print(f"[red]error:[/red] {escape(redact(message))}", highlight=False)


@contextmanager
def _registry_hint(registry_spec: str) -> Iterator[None]:
    """A saga the demo's registry (``--registry``'s default) lacks: say how to give another."""
    from pipeline.sagas.definition import SagaDefinitionError

    try:
        yield
    except SagaDefinitionError as error:
        if registry_spec != DEMO_REGISTRY:
            raise
        raise PipelineError(
            f"{error}; give the registry that defines it with --registry MODULE:ATTRIBUTE"
        ) from None


def _stored_ids(saga_ids: list[str]) -> list[str]:
    """Each id given, checked as one (:func:`stored_name`)."""
    for saga_id in saga_ids:
        stored_name(saga_id)
    return saga_ids


SagaIdsArgument = Annotated[
    list[str],
    typer.Argument(
        help="The saga's id, or several: each in its own transaction, one line each.",
        metavar="SAGA_ID",  # as the one id was named in messages ("Missing argument")
        callback=_stored_ids,
    ),
]


@app.command()
def retry(
    ctx: typer.Context,
    saga_ids: SagaIdsArgument,
    registry: RegistryOption = DEMO_REGISTRY,
) -> None:
    """Try a stuck saga's failed compensation (or confirms) again (compensation_failed or
    confirmation_failed only); the orchestrator carries on from there.

    Several ids: exit code 1 when any could not be retried (each has its error line; the
    others were). Ids from saga list go through xargs -r, which runs nothing when none match.

    Examples:
      pipeline saga retry ORDER-1
      pipeline saga list -s compensation_failed --ids-only -n 1000 | xargs -r pipeline saga retry
    """
    _operate(ctx, registry, saga_ids, None)


@app.command()
def resolve(
    ctx: typer.Context,
    saga_ids: SagaIdsArgument,
    note: Annotated[
        str,
        typer.Option(
            "--note",
            help="What was done by hand (kept in the timeline and on saga.events); required.",
            callback=utf8_text,
        ),
    ],
    registry: RegistryOption = DEMO_REGISTRY,
) -> None:
    """Mark a stuck saga as handled by hand: it ends as resolved.

    The compensations it had not run are not run: undo what is left by hand first (saga show
    lists each step). Several ids: the same note for each, exit code 1 when any could not be
    resolved (each has its error line).

    Examples:
      pipeline saga resolve ORDER-17 --note "refunded by hand, ticket 4711"
    """
    if not note.strip():
        # A saga ended by hand with no word of what was done cannot be audited later.
        raise typer.BadParameter("say what was done by hand", param_hint="--note")
    _operate(ctx, registry, saga_ids, note)


@app.command()
def prune(
    ctx: typer.Context,
    older_than_days: Annotated[
        float | None,
        typer.Option(
            "--older-than-days",
            min=0,
            max=36_500,
            help="Delete those that ended more than this many days ago (default: the "
            "retention, sagas.retention_s, and 10 minutes, as the orchestrators do).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only count what would be deleted; delete nothing."),
    ] = False,
) -> None:
    """Delete the sagas that ended (completed, compensated, resolved) longer ago than their
    retention.

    Every orchestrator does it too, every few minutes. Sagas still running or waiting for an
    operator are never deleted.

    Examples:
      pipeline saga prune --dry-run            # only count them
      pipeline saga prune
      pipeline saga prune --older-than-days 7
    """
    from pipeline.sagas.state_counts import deletable_before
    from pipeline.sagas.store import count_ended_sagas, delete_ended_sagas

    settings = _settings(ctx)
    now = datetime.now(UTC)
    if older_than_days is not None:
        cutoff = now - timedelta(days=older_than_days)
    elif settings.sagas.retention_s is not None:
        # What the orchestrators delete: the margin lets their gauges count the sagas out first.
        cutoff = deletable_before(now, timedelta(seconds=settings.sagas.retention_s))
    else:
        raise PipelineError(
            "sagas.retention_s is null (ended sagas are kept forever): give --older-than-days"
        )
    with _database(ctx) as engine:
        if dry_run:
            deleted = count_ended_sagas(engine, ended_before=cutoff)
        else:
            deleted = delete_ended_sagas(
                engine, ended_before=cutoff, batch_size=settings.sagas.cleanup_batch_size
            )
    done = "would be deleted (dry run)" if dry_run else "deleted"
    console = stdout_console()
    if deleted:
        table = Table(title=f"sagas {done} (ended before {when(cutoff)} UTC)")
        for column in ("saga", "state", "sagas"):
            table.add_column(column, justify="right" if column == "sagas" else "left")
        for (name, status), count in sorted(deleted.items()):
            table.add_row(name, status, f"{count:,}")
        console.print(table)
    console.print(
        f"{counted(sum(deleted.values()), 'saga')} {done} that ended before {when(cutoff)} UTC"
    )


@app.command()
def graph(
    name: Annotated[str, typer.Argument(help="The saga's name, e.g. CreateOrder.")],
    version: Annotated[
        int | None, typer.Option("--version", help="This version (default: the newest).")
    ] = None,
    registry: RegistryOption = DEMO_REGISTRY,
) -> None:
    """The saga as a Mermaid flowchart: steps forwards, compensations backwards.

    The Mermaid text goes to stdout, for a mermaid block in Markdown (GitHub draws it).

    Examples:
      pipeline saga graph CreateOrder
      pipeline saga graph CreateOrder --version 1
      pipeline saga graph Billing --registry billing.sagas:registry
    """
    from pipeline.sagas import SagaRegistry, mermaid

    sagas = load_attribute(registry, SagaRegistry, what="REGISTRY", example=DEMO_REGISTRY)
    with _registry_hint(registry):
        definition = sagas.latest(name) if version is None else sagas.get(name, version)
    typer.echo(mermaid(definition), nl=False)
