"""``configure_logging``: one call at a program's entry point sets up its logging.

1. the root logger's level (``settings.logs.level`` unless given); the libraries that narrate
   their own work (Faust and mode, aiokafka, Alembic, the HTTP clients) only say warnings and
   errors, unless the level is ``DEBUG``;
2. a stderr handler: ECS JSON (one object a line) or a readable line with the context ids
   (``settings.logs.console``: ``auto`` picks text on a terminal, JSON otherwise);
3. unless ``to_kafka=False``, a :class:`~pipeline.logs.handler.KafkaLogHandler` to
   ``settings.logs.topic``, closed (flushed, bounded) at exit; Kafka settings that no client
   can be made with are a :class:`~pipeline.errors.PipelineError` before it is installed (the
   program's own one-line error, not the handler's "no producer" and its count at exit too);
4. unless ``flush_on_sigterm=False``, SIGTERM (how Docker, Kubernetes and systemd stop a
   program) first flushes the Kafka handler (bounded, as at exit: what Kafka did not take is
   written to stderr and counted), then ends the program as Python's default action does (by
   the signal): that default ends it at once, without the exit hooks, and its last records
   were lost without a word. Only while SIGTERM still has its default action, set from the
   main thread: a program that handles SIGTERM itself (before or after this call) keeps its
   own handling. A second SIGTERM meanwhile ends it at once.

Idempotent: a second call replaces what the first installed (handlers made by others, such as
pytest's, are left alone). Both handlers share each record's document, so a line on stderr and
its copy in Elasticsearch have the same ``event.id``.

With a JSON console every line on stderr is a JSON object: :func:`json_console` tells the
command line so, which then logs what it would have printed (``pipeline.cli.console``: its
notes; ``pipeline.cli.main``: the one-line error that ends a program, which the Kafka handler's
close at exit also sends to the topic, waiting ``flush_timeout_s`` at most, a fraction of a
second once the producer was told Kafka refused the connection or cannot be reached), and the
Kafka handler's own lines (no producer, the count of records lost at exit) are ECS documents
too.
"""

from __future__ import annotations

import atexit
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from pipeline.kafka.clients import build_producer, check_producer
from pipeline.kafka.librdkafka_logs import RepeatSummary
from pipeline.logs.context import CONTEXT_FIELDS
from pipeline.logs.handler import KafkaLogHandler, LogProducer, record_document, record_json
from pipeline.settings import PipelineSettings
from pipeline.settings.programs import LOG_LINGER_MS

__all__ = ["EcsJsonFormatter", "TextFormatter", "configure_logging", "json_console"]

_MARK = "_pipeline_configured"
#: Libraries that log every request at INFO: kept at WARNING (the log shipper's own bulk
#: requests would otherwise be logged, shipped, and logged again).
_CHATTY_LOGGERS = ("elastic_transport", "urllib3")
#: Of those, loggers that WARN at every failed request while Elasticsearch is away ("Node ...
#: has failed", "Retrying request"): kept at ERROR. Whoever calls says it once (the shipper:
#: "elasticsearch unreachable ..."); a search or a shipper's outage was 11 such lines first.
_RETRYING_HTTP_LOGGERS = ("elastic_transport.node_pool", "elastic_transport.transport")
#: Libraries whose INFO lines narrate their internals (a processor's start was 50 lines of
#: Faust services starting, aiokafka's group protocol and Alembic's migrations): kept at
#: WARNING unless the program logs at DEBUG.
_INTERNAL_LOGGERS = ("faust", "mode", "aiokafka", "alembic")
#: Loggers whose DEBUG lines carry credentials: aiokafka.conn logs every request it sends,
#: SASL's too (PLAIN's password in clear; SCRAM's nonces, salt and signature, enough to test
#: password guesses offline). Kept at INFO even when the program logs at DEBUG: secrets are
#: never logged.
_CREDENTIAL_LOGGERS = ("aiokafka.conn",)
#: aiokafka's loggers that repeat an ERROR line every retry while Kafka is away (a processor
#: wrote 728 lines in 35 s of an outage): summarised like librdkafka's (RepeatSummary). A
#: logger's filter sees only what is logged to that logger, so each one gets its own.
_RETRYING_CLIENT_LOGGERS = (
    "aiokafka",
    "aiokafka.conn",
    "aiokafka.cluster",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.sender",
)
# librdkafka's own log lines: kept out of the handlers (they would feed the Kafka handler).
_librdkafka_log = logging.getLogger("pipeline.kafka.logs")
_librdkafka_log.addHandler(logging.NullHandler())
_librdkafka_log.propagate = False


class _DocumentFormatter(logging.Formatter):
    """A formatter working from a record's ECS document (the one the Kafka handler sends)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._hostname = socket.gethostname()

    def document(self, record: logging.LogRecord) -> dict[str, Any]:
        return record_document(record, service=self.service, hostname=self._hostname)


class EcsJsonFormatter(_DocumentFormatter):
    """Formats a record as its ECS JSON document."""

    def format(self, record: logging.LogRecord) -> str:
        return record_json(record, service=self.service, hostname=self._hostname).decode("utf-8")


class TextFormatter(_DocumentFormatter):
    """``12:00:00.123 INFO  orders.handler: message  correlation_id=... event_id=...``."""

    def format(self, record: logging.LogRecord) -> str:
        document = self.document(record)
        moment = datetime.fromtimestamp(record.created, UTC).astimezone()
        line = (
            f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d} {record.levelname:<7} "
            f"{record.name}: {document['message']}"
        )
        context = document.get("pipeline", {})
        ids = [f"{name}={context[name]}" for name in CONTEXT_FIELDS if name in context]
        if ids:
            line += "  " + " ".join(ids)
        stack = document.get("error", {}).get("stack_trace")
        if stack:
            line += "\n" + stack
        return line


#: The most bytes of records the log handler's producer batches for a partition (librdkafka's
#: default is 1,000,000). The broker refuses an oversized batch whole, so one record over the
#: logs topic's own max.message.bytes lost the records batched with it (a review: 11 records for
#: one 400 kB line on a 256 KiB topic). A topic limit of 72 KiB or more (the broker's default is
#: 1 MiB) now refuses such a record alone. A constant rather than the topic's limit read at
#: start: that look-up held the handler's first send, and a program's exit, for its timeout
#: when Kafka does not answer. Log records are small and the batches are sent every 50 ms.
LOG_BATCH_BYTES = 64 * 1024


def _log_producer_config(settings: PipelineSettings) -> dict[str, Any]:
    """The log handler's producer's own config, on top of the Kafka settings. Its batches are
    small (:data:`LOG_BATCH_BYTES`), so that a record too large for the logs topic fails
    alone."""
    return {
        "client.id": f"{settings.kafka.client_id}-logs",
        "linger.ms": LOG_LINGER_MS,
        "batch.size": LOG_BATCH_BYTES,
        "compression.type": settings.producer.compression,
        "delivery.timeout.ms": settings.logs.delivery_timeout_ms,
        "queue.buffering.max.messages": settings.logs.buffer_size,
        "logger": _librdkafka_log,
    }


def _kafka_producer_factory(
    settings: PipelineSettings, on_error: Callable[[Any], None]
) -> LogProducer:
    """The log handler's producer; ``on_error``: its handler's
    :meth:`~pipeline.logs.handler.KafkaLogHandler.kafka_error`, so that a Kafka that refused
    the connection or cannot be reached is not waited for at exit."""
    return build_producer(settings.kafka, error_cb=on_error, **_log_producer_config(settings))


def configure_logging(
    settings: PipelineSettings,
    service: str,
    *,
    level: int | str | None = None,
    to_kafka: bool = True,
    console: Literal["auto", "json", "text"] | None = None,
    stream: TextIO | None = None,
    flush_on_sigterm: bool = True,
) -> KafkaLogHandler | None:
    """Set up the root logger for a program named ``service``; returns the Kafka handler.

    See the module docstring. ``stream`` is where console lines go (default stderr);
    ``flush_on_sigterm``: whether SIGTERM, while it has its default action, flushes the Kafka
    handler before it ends the program (see the module docstring).
    Raises :class:`~pipeline.errors.PipelineError` when ``to_kafka`` and no Kafka client can be
    made with ``settings.kafka`` (the error a client's construction raises): the console is
    set up by then, so the caller's error line is written there once, and no Kafka handler is
    installed.
    """
    if not isinstance(service, str) or not service:
        raise TypeError(f"service must be a non-empty str, got {service!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.setLevel(level if level is not None else settings.logs.level)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in _RETRYING_HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    debugging = root.getEffectiveLevel() <= logging.DEBUG
    for name in _INTERNAL_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if debugging else logging.WARNING)
    for name in _CREDENTIAL_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if debugging else logging.WARNING)
    for name in _RETRYING_CLIENT_LOGGERS:
        client_logger = logging.getLogger(name)
        if not any(isinstance(known, RepeatSummary) for known in client_logger.filters):
            client_logger.addFilter(RepeatSummary())

    out = stream or sys.stderr
    mode = console or settings.logs.console
    if mode == "auto":
        mode = "text" if out.isatty() else "json"
    console_handler = logging.StreamHandler(out)
    console_handler.setFormatter(
        TextFormatter(service) if mode == "text" else EcsJsonFormatter(service)
    )
    setattr(console_handler, _MARK, True)
    root.addHandler(console_handler)

    if not to_kafka:
        return None

    # Kafka settings no client can be made with (a TLS file missing, a value librdkafka
    # refuses) are the program's error, said once, before the handler could take a record:
    # its producer failed at the first one, and the same reason was three lines on stderr
    # ("no producer (...)", the program's error, "N records not delivered (no producer: ...)").
    check_producer(settings.kafka, **_log_producer_config(settings))
    kafka_handler = KafkaLogHandler(
        lambda: _kafka_producer_factory(settings, kafka_handler.kafka_error),
        service=service,
        topic=settings.logs.topic,
        buffer_size=settings.logs.buffer_size,
        flush_timeout_s=settings.logs.flush_timeout_s,
        fallback=out,
        records_on_console=True,  # the console handler above prints every record
        notes_as_json=mode == "json",
    )
    setattr(kafka_handler, _MARK, True)
    root.addHandler(kafka_handler)
    atexit.register(kafka_handler.close)
    if flush_on_sigterm:
        flush_logs_on_sigterm()
    return kafka_handler


def flush_logs_on_sigterm() -> bool:
    """Make SIGTERM flush the Kafka log handlers :func:`configure_logging` installed, then end
    the program by the signal as its default action does (the same exit status: a supervisor
    sees a program stopped by SIGTERM), when SIGTERM still has its default action and this is
    the main thread (only it may set a handler); whether it did. The handler runs when the main
    thread next runs Python code: a blocking call that signals interrupt (a sleep, a socket, a
    lock, a thread's join) first, a C call that does not return meanwhile only when it does."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _flush_logs_then_terminate)
    return True


def _flush_logs_then_terminate(signum: int, _frame: object) -> None:
    # The default action back first: a second SIGTERM while this flushes ends it at once.
    signal.signal(signum, signal.SIG_DFL)
    for handler in list(logging.getLogger().handlers):
        if isinstance(handler, KafkaLogHandler) and getattr(handler, _MARK, False):
            handler.close()  # bounded; what Kafka did not take goes to stderr, counted
    signal.raise_signal(signum)


def json_console(stream: TextIO | None = None) -> bool:
    """Whether :func:`configure_logging`'s console writes ECS JSON (``json``, or ``auto`` off a
    terminal) to ``stream`` (by default ``sys.stderr`` as it is now): then what the program
    would print there is logged instead, so that every line there is a JSON object (and
    reaches the logs topic too). A console on another stream leaves stderr as it is."""
    out = sys.stderr if stream is None else stream
    return any(
        getattr(handler, _MARK, False)
        and isinstance(handler.formatter, EcsJsonFormatter)
        and getattr(handler, "stream", None) is out
        for handler in logging.getLogger().handlers
    )
