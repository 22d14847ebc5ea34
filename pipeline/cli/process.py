"""``pipeline process MODULE:PROCESSOR``: run a processor's handlers as a Faust worker."""

from __future__ import annotations

import importlib
import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from pipeline.cli.checks import quoted
from pipeline.cli.console import announcing_kafka, stderr_console
from pipeline.errors import PipelineError
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from pipeline.processing.processor import Processor

T = TypeVar("T")


def load_attribute(spec: str, expected: type[T], *, what: str, example: str) -> T:
    """The object named by ``module.path:attribute`` (the current folder first), which must be
    an ``expected``; a :class:`PipelineError` in one line otherwise."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute or ":" in attribute:
        raise PipelineError(f"expected MODULE:{what} (e.g. {example}), got {spec!r}")
    if module_name.endswith(".py") or not all(
        part.isidentifier() for part in module_name.split(".")
    ):
        raise PipelineError(
            f"{module_name!r} is not a module's dotted name (e.g. {example.partition(':')[0]}; "
            "not a path or file name): run from the folder that holds it, or add that folder "
            "to PYTHONPATH"
        )
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise PipelineError(f"cannot import {module_name}: {error}") from None
    except Exception as error:  # the module's own code failed: where, in one line
        raise PipelineError(f"importing {module_name} failed: {_where(error)}") from None
    if not hasattr(module, attribute):
        raise PipelineError(f"{module_name} has no {attribute}")
    found = getattr(module, attribute)
    if not isinstance(found, expected):
        raise PipelineError(
            f"{spec} is of type {type(found).__name__}, not a {expected.__module__}."
            f"{expected.__qualname__}"
        )
    return found


def _where(error: Exception) -> str:
    """``error`` and the line of the imported code it came from."""
    if isinstance(error, SyntaxError):  # its text names the file and line already
        return f"SyntaxError: {error}"
    frames = traceback.extract_tb(error.__traceback__)
    last = frames[-1] if frames else None
    at = f" (at {last.filename}:{last.lineno})" if last is not None else ""
    return f"{type(error).__name__}: {error}{at}"


def load_processor(spec: str) -> Processor:
    """The :class:`Processor` named by ``module.path:attribute`` (the current folder first)."""
    from pipeline.processing.processor import Processor

    return load_attribute(
        spec, Processor, what="PROCESSOR", example="consumers.orders_service:processor"
    )


#: The longest ``--group`` taken: what the inbox and the parked keys hold of a group's name.
GROUP_CHARACTERS = 255


def consumer_group(value: str | None) -> str | None:
    """``--group``, when given: a consumer group id of the characters a processor's name takes
    (letters, digits, '.', '_', '-': Kafka takes more, but a space or a control character would
    garble every line that shows the group) and at most :data:`GROUP_CHARACTERS`."""
    if value is None:
        return None
    if not value:
        raise typer.BadParameter("must not be empty")
    if (bad := next((c for c in value if not (c.isalnum() or c in "._-")), None)) is not None:
        raise typer.BadParameter(
            f"{quoted(value)} holds {bad!r}: a group takes letters, digits, '.', '_' and '-', "
            "as a processor's name does"
        )
    if len(value) > GROUP_CHARACTERS:
        raise typer.BadParameter(
            f"is {len(value):,} characters long; at most {GROUP_CHARACTERS} (what the inbox "
            "keeps of a group)"
        )
    return value


class EventLoop(StrEnum):
    uvloop = "uvloop"
    asyncio = "asyncio"


class Start(StrEnum):
    earliest = "earliest"
    latest = "latest"


def process(
    ctx: typer.Context,
    spec: str = typer.Argument(
        ...,
        metavar="MODULE:PROCESSOR",
        help="Where the Processor is, e.g. consumers.orders_service:processor.",
    ),
    max_in_flight: int | None = typer.Option(
        None,
        "--max-in-flight",
        min=1,
        max=1024,  # processing.max_in_flight's bound
        help="Events handled at once across keys (one per key; an async handler's event "
        "waiting only for its commit takes no place; default: "
        "PIPELINE_PROCESSING__MAX_IN_FLIGHT, else 16).",
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port."
    ),
    event_loop: EventLoop | None = typer.Option(
        None,
        "--loop",
        help="The event loop: uvloop (faster) or asyncio's own (default: "
        "PIPELINE_PROCESSING__EVENT_LOOP, else uvloop).",
    ),
    start: Start | None = typer.Option(
        None,
        "--start",
        help="Where a new consumer group starts reading: the oldest records kept (the "
        "default) or only those written from now on (default: PIPELINE_PROCESSING__START, "
        "else earliest). Committed offsets always win.",
    ),
    group: str | None = typer.Option(
        None,
        "--group",
        callback=consumer_group,
        help="Read as this consumer group, which also owns the inbox rows, parked keys and "
        "dead letters, instead of the processor's name: for an independent copy of a "
        "processor that reads every event itself (a test, a shadow run) beside the real one, "
        "whose offsets it never moves. Its handlers apply every effect again: give it a "
        "database of its own. Redrives of its dead letters go to this group. Default: the "
        "processor's name.",
    ),
) -> None:
    """Run a processor until Ctrl-C or SIGTERM: its handlers in order per key, concurrently
    across keys, exactly once in effect (inbox), with retries and dead letters.

    `async def` handlers run on the event loop and commit in groups (the fast path for I/O);
    plain functions run in worker threads, quick ones several to a transaction (group commit,
    see docs/processing.md). The database
    (PIPELINE_DATABASE__URL; by default pipeline.db in the stack's home) is named
    on stderr and migrated first; the topics and their .dlq must exist
    (`pipeline topics apply`).

    Exit codes:
    0 stopped by Ctrl-C or SIGTERM once it runs (after its line NAME on
    KAFKA: topics ...);
    2 usage or setup error (MODULE:PROCESSOR not found, a topic or its .dlq
    missing, Kafka unreachable, a database it cannot reach);
    130 Ctrl-C while it starts (importing, migrating, joining the group):
    nothing was consumed; SIGTERM then ends it with 143, silently.

    Examples:
      pipeline process examples.quickstart.billing:processor
      pipeline process consumers.orders_service:processor --metrics-port 9400
      pipeline process my_service.handlers:processor --start latest
      pipeline process my_service.handlers:processor --group my-service.shadow
    """
    from pipeline.database import create_sqlite_folder
    from pipeline.kafka.clients import build_admin
    from pipeline.logs import configure_logging
    from pipeline.processing.faust.app import run_processor
    from pipeline.topics.admin import describe_cluster_topics
    from pipeline.topics.spec import dlq_name

    settings: PipelineSettings = ctx.obj
    updates: dict[str, object] = {}
    if max_in_flight is not None:
        updates["max_in_flight"] = max_in_flight
    if metrics_port is not None:
        updates["metrics_port"] = metrics_port
    if event_loop is not None:
        updates["event_loop"] = event_loop.value
    if start is not None:
        updates["start"] = start.value
    if updates:
        processing = settings.processing.model_copy(update=updates)
        settings = settings.model_copy(update={"processing": processing})
    processor = load_processor(spec)
    if not processor.topics:
        raise PipelineError(
            f"processor {processor.name} has no handlers: register one with "
            "@processor.handler(TOPIC) before it is run"
        )
    # Its own SIGTERM handling, once it runs, says how it stopped; before that SIGTERM ends it
    # at once (143), as documented above.
    configure_logging(settings, processor.name, flush_on_sigterm=False)
    announce_database(settings)
    create_sqlite_folder(settings.database, settings.stack.home)
    bootstrap = settings.kafka.bootstrap_servers
    # Kafka away is the same one line as for every other command (missing topics are named
    # by the processor's own check, next).
    topics = [*processor.topics, *(dlq_name(topic) for topic in processor.topics)]
    with announcing_kafka(bootstrap):
        describe_cluster_topics(build_admin(settings.kafka), topics, bootstrap=bootstrap)
    # The processor's name is its group unless --group names another.
    run_processor(processor, settings, **({} if group is None else {"group": group}))


def announce_database(settings: PipelineSettings) -> None:
    """Say on stderr which database this program uses, before it uses it."""
    from pipeline.database import database_label

    stderr_console().print(f"database: {database_label(settings.database)}", highlight=False)


def announce_migration(migrated_from: list[str] | None) -> None:
    """Say on stderr that this command migrated the database's schema, and from where
    (:func:`pipeline.database.migrate`'s answer; ``None``: it had nothing to do): a command
    that logs only warnings would change a shared database without a word."""
    from pipeline.database import HEAD_REVISION

    if migrated_from is not None:
        before = ", ".join(migrated_from) or "nothing (a new database)"
        stderr_console().print(f"schema migrated from {before} to {HEAD_REVISION}", highlight=False)
