"""Running a processor as a Faust worker (``pipeline process``).

:func:`run_processor` checks the topics, migrates the database, binds the processor to a Faust
app (:class:`~pipeline.processing.faust.binding.FaustBinding`) and runs Faust's worker until
SIGINT or SIGTERM. A stop by signal exits cleanly, whatever the worker was doing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import tempfile
from pathlib import Path

import faust
from sqlalchemy.engine import Engine

from pipeline.database import build_engine, is_postgres, migrate
from pipeline.errors import PipelineError
from pipeline.gc_tuning import few_collections
from pipeline.kafka.clients import build_admin
from pipeline.metrics_server import serve_metrics
from pipeline.processing.faust.binding import FaustBinding
from pipeline.processing.metrics import ProcessorMetrics
from pipeline.processing.processor import Processor
from pipeline.processing.start_position import pin_latest_start
from pipeline.settings import PipelineSettings
from pipeline.topics.admin import require_topics
from pipeline.topics.spec import dlq_name

__all__ = ["check_topics", "run_processor", "use_event_loop", "use_switch_interval"]

logger = logging.getLogger("pipeline.processing")


def check_topics(settings: PipelineSettings, processor: Processor) -> None:
    """Fail with one line when a topic the processor reads or dead-letters to is missing; warn
    when the logs topic is (its log lines would be lost, one by one, unseen).

    Worded like every other command: Kafka not answering and missing topics are the errors of
    :mod:`pipeline.topics.admin`.
    """
    bootstrap = settings.kafka.bootstrap_servers
    admin = build_admin(settings.kafka)
    wanted = [*processor.topics, *(dlq_name(topic) for topic in processor.topics)]
    logs = settings.logs.topic
    found = require_topics(admin, wanted, bootstrap=bootstrap, optional=[logs])
    if logs not in found:
        logger.warning(
            "the logs topic %s does not exist on Kafka at %s: this processor's log lines are "
            "not shipped (create it, e.g. with `pipeline topics apply`)",
            logs,
            bootstrap,
        )


def use_event_loop(kind: str) -> str:
    """Make new event loops of that kind (before the worker makes its own); returns the kind in
    use (``uvloop`` falls back to asyncio where it is not installed)."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            logger.warning("uvloop is not installed here: the processor runs on asyncio's loop")
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return "uvloop"
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    return "asyncio"


#: The switch interval on PostgreSQL unless set (see :func:`use_switch_interval`).
POSTGRES_SWITCH_INTERVAL_MS = 0.5


def use_switch_interval(milliseconds: float | None, database: Engine) -> None:
    """Let a thread keep the interpreter at most ``milliseconds`` while another waits for it
    (``None``: :data:`POSTGRES_SWITCH_INTERVAL_MS` on PostgreSQL, Python's own elsewhere).

    The database round trips run in worker threads; each time a reply arrives, the thread
    needs the interpreter back from the event loop, which keeps it while it has work: at
    Python's default 5 ms a PostgreSQL round trip from a worker thread beside a busy thread
    measured 5.8 ms (p50), at 0.5 ms 0.29 ms (0.2 ms on an idle machine). On SQLite there is
    no such wait, and a shorter interval only cost the loop CPU (bench/processing.py: 0.21
    CPU ms per no-op event at 5 ms, 0.27 at 0.5 ms).
    """
    if milliseconds is None and is_postgres(database):
        milliseconds = POSTGRES_SWITCH_INTERVAL_MS
    if milliseconds is not None:
        sys.setswitchinterval(milliseconds / 1000)


def run_processor(
    processor: Processor,
    settings: PipelineSettings,
    *,
    group: str | None = None,
    loglevel: str = "warn",
) -> None:
    """Run ``processor`` until SIGINT/SIGTERM: migrate, check topics, start the Faust worker.

    ``group``: the consumer group it reads as, which owns its inbox rows, parked keys and dead
    letters (``pipeline process --group``); the processor's name unless given."""
    group = group or processor.name
    processing = settings.processing
    loop_kind = use_event_loop(processing.event_loop)
    database = build_engine(settings.database, pool_size=processing.max_in_flight)
    use_switch_interval(processing.switch_interval_ms, database)
    check_topics(settings, processor)
    migrate(database)
    processor.start(database)
    metrics = ProcessorMetrics(processor.name)
    for extra in processor.metric_registries:  # e.g. the saga orchestrator's own metrics
        metrics.registry.register(extra)  # a registry collects like any collector
    if processing.metrics_port is not None:
        serve_metrics(metrics.registry, processing.metrics_port)
    # Faust makes a data directory when its worker starts, `<name>-data` in the current
    # directory unless told otherwise. The app keeps nothing there (its tables are in memory),
    # so it gets a temporary one, removed when the worker stops: nothing is left behind
    # wherever `pipeline process` was run, and no state outlives the process to go stale.
    datadir = tempfile.TemporaryDirectory(prefix=f"pipeline-{processor.name}-")
    binding = FaustBinding(
        processor,
        settings,
        database=database,
        metrics=metrics,
        datadir=Path(datadir.name),
        group=group,
    )
    if processing.start == "latest":
        pin_latest_start(settings.kafka, binding.app.conf.id, processor.topics)
    logger.info(
        "%s%s on %s: topics %s, %d in flight, %s loop, host %s",
        processor.name,
        "" if group == processor.name else f" as group {group}",
        settings.kafka.bootstrap_servers,
        ", ".join(processor.topics),
        processing.max_in_flight,
        loop_kind,
        socket.gethostname(),
    )
    # The collector runs less often while the worker runs (see pipeline.gc_tuning).
    with binding.producer.polling(), few_collections():
        worker = faust.Worker(binding.app, loglevel=loglevel, quiet=True, override_logging=False)
        if not worker.stdout.isatty():
            worker.spinner = None  # its cursor-show escape is noise in a pipe or a file
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                raise
        except Exception as error:  # Faust re-raises what crashed the worker
            raise PipelineError(
                f"{processor.name} stopped after a crash: {type(error).__name__}: {error}"
            ) from None
        finally:
            binding.producer.flush(10)
            database.dispose()
            datadir.cleanup()
