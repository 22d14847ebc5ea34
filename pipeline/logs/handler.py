"""``KafkaLogHandler``: a logging handler that ships ECS JSON records to the ``logs`` topic.

It never blocks or crashes the program that logs:

1. ``emit()`` (in the logging thread) builds the record's ECS document, with the
   :func:`~pipeline.logs.context.log_context` of that thread, and appends its bytes to a bounded
   buffer without waiting; a full buffer (Kafka unreachable for a while) counts the record as
   dropped and writes its JSON line to the fallback stream (stderr) instead, and so does a
   record that cannot be encoded (what can be said of it, with the reason, see
   :func:`record_document`): never logging's own "--- Logging error ---" traceback alone;
2. a background thread moves the buffered records into the Kafka producer (key: the service
   name, value: the JSON) every 20 ms while they come, every 100 ms when idle, and serves
   delivery reports; a record Kafka did not take in time is counted as failed and also written
   to the fallback stream. It wakes on a timer rather than for each record: a thread woken for
   every line (a ``queue.Queue``) took the interpreter from the logging thread that often, and
   logging cost 68 us a line where it now costs 54 (the producer lingers 50 ms anyway);
3. :meth:`KafkaLogHandler.flush` waits (bounded) for what is buffered; :meth:`close` flushes
   (for ``flush_timeout_s`` at most), stops the thread, takes back what Kafka did not
   acknowledge by then (``purge``: each such record is reported as not delivered, so it is
   written to the fallback stream and counted) and writes one line saying how many records
   never reached Kafka, for each reason. Nothing after it waits for Kafka: a second flush
   (``logging.shutdown`` flushes every handler after the ``atexit`` close) returns at once.
   Once the producer's ``error_cb`` (:meth:`KafkaLogHandler.kafka_error`) said Kafka refused
   the connection (login, TLS) or no broker could be reached, and nothing was delivered
   since, a flush waits :data:`REFUSED_FLUSH_S` at most: waiting longer cannot help, and the
   program's exit (its own error line said why already) was seconds late.

Its own lines on the fallback stream (no producer; the count at exit) are plain text, or ECS
JSON documents like the records beside them with ``notes_as_json`` (a JSON console).

Records of its own making cannot loop back: librdkafka's log goes to a silent logger, records
made in the sender thread or by ``pipeline.logs`` itself go only to the fallback stream.

The producer is a raw confluent-kafka ``Producer`` (built by :mod:`pipeline.kafka.clients`, so
idempotent, acks=all): ``EventProducer`` adds CloudEvents envelopes and raises unobserved
failures on flush, neither of which a log line wants.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from confluent_kafka import KafkaError

from pipeline.ids import new_event_id
from pipeline.logs.context import current_context
from pipeline.logs.record import ecs_document, ecs_json, unencodable_document
from pipeline.plurals import counted


def _is_kafka(error: Exception) -> bool:
    """A ``KafkaException`` carrying a ``KafkaError`` (whose ``str()`` is its reason)."""
    return bool(error.args) and hasattr(error.args[0], "str")


__all__ = [
    "KAFKA_REFUSED",
    "KAFKA_UNREACHABLE",
    "REFUSED_FLUSH_S",
    "HandlerCounters",
    "KafkaLogHandler",
    "LogProducer",
    "kafka_unusable",
    "record_document",
    "record_json",
    "unencodable_reason",
]

#: Records from these loggers are never sent to Kafka (they would feed back into the handler).
_SELF_LOGGERS = ("pipeline.logs", "pipeline.kafka")
_POLL_S = 0.1
#: How often the sender thread moves buffered records into the producer while they come (it
#: looks every _POLL_S when the last look found none).
SEND_EVERY_S = 0.02
# The cached document of a record, so stderr and Kafka carry the same event id and context.
_DOCUMENT_ATTRIBUTE = "_pipeline_ecs"
# Its JSON, written once for both (the encoding costs as much as building the document).
_JSON_ATTRIBUTE = "_pipeline_ecs_json"
# Why the record's own document could not be made or encoded (its stand-in is cached instead).
_UNENCODABLE_ATTRIBUTE = "_pipeline_ecs_unencodable"
#: How long close() waits for the sender thread to stop, after the flush: it stops within one
#: wait for room in the producer (_POLL_S), so this is only a bound for a stuck client.
_STOP_SENDER_S = 1.0
#: Why a record still buffered at exit never went to Kafka, when the producer's queue was full.
_QUEUE_FULL = "never sent: the producer's queue stayed full, Kafka was not taking records"
#: The exit line names this many reasons of each kind, the most frequent first.
_REASONS_NAMED = 3
#: How long a flush waits once Kafka refused the connection or no broker could be reached
#: (reported by the producer's error_cb, nothing delivered since): the delivery reports of
#: what was acknowledged before, not the flush timeout for records that cannot go anywhere.
REFUSED_FLUSH_S = 0.2
#: A flush waits in slices this long, so that a refusal reported meanwhile ends it.
_FLUSH_SLICE_S = 0.05
#: librdkafka's errors (error_cb) that say Kafka refuses this client: the login or the TLS
#: handshake. librdkafka retries, but the settings will not change while the program exits.
_REFUSALS = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED}
)
#: Every broker is down for the client: nothing listens, the address does not resolve, every
#: connection failed (reported once, after the _TRANSPORT or _RESOLVE errors of each broker;
#: those alone are one broker's, and another may still take the records).
_ALL_DOWN = KafkaError._ALL_BROKERS_DOWN
KAFKA_REFUSED = "Kafka refused the connection"
KAFKA_UNREACHABLE = "no Kafka broker could be reached"


class LogProducer(Protocol):
    """What the handler uses of ``confluent_kafka.Producer``."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...
    def purge(self, in_queue: bool = ..., in_flight: bool = ..., blocking: bool = ...) -> None: ...
    def __len__(self) -> int: ...


@dataclass
class HandlerCounters:
    """What became of the records given to one handler."""

    emitted: int = 0
    delivered: int = 0
    dropped: int = 0  # the buffer was full: written to the fallback stream only
    failed: int = 0  # Kafka did not acknowledge: written to the fallback stream
    skipped: int = 0  # the handler's own or librdkafka's records
    #: Logged by another thread once the handler had closed (a SIGTERM's flush runs while the
    #: program's threads go on): on the fallback stream only, counted in the exit line.
    after_close: int = 0
    unencodable: int = 0  # no JSON could be made of it: a stand-in on the fallback stream only


def kafka_unusable(error: Any) -> str | None:
    """What one of the producer's errors (``error_cb``'s ``KafkaError``) says of Kafka, when it
    says it cannot be used: :data:`KAFKA_REFUSED` (authentication, TLS handshake) or
    :data:`KAFKA_UNREACHABLE` (all brokers down); ``None`` for any other error."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    if code in _REFUSALS:
        return KAFKA_REFUSED
    if callable(getattr(error, "fatal", None)) and error.fatal():
        # The producer takes nothing more (its idempotence unsupported: a mistyped port that
        # is the KRaft controller's, say).
        return KAFKA_REFUSED
    text = error.str() if callable(getattr(error, "str", None)) else str(error)
    # librdkafka reports a TLS handshake the broker cut short (a PLAINTEXT listener) as a
    # transport error: a refusal all the same.
    if code == KafkaError._TRANSPORT and "SSL handshake failed" in text:
        return KAFKA_REFUSED
    if code == _ALL_DOWN:
        return KAFKA_UNREACHABLE
    return None


def record_document(
    record: logging.LogRecord, *, service: str, hostname: str | None = None
) -> dict[str, Any]:
    """The ECS document of a record, made once per record (with the current log context).

    Never raises: a record whose document cannot be made (its arguments do not fit its format,
    an ``extra=`` whose ``str()`` raises) gets :func:`~pipeline.logs.record.unencodable_document`
    instead, and :func:`unencodable_reason` says why."""
    cached = getattr(record, _DOCUMENT_ATTRIBUTE, None)
    if isinstance(cached, dict):
        return cached
    host = hostname or socket.gethostname()
    event_id = new_event_id()
    try:
        document = ecs_document(
            record, service=service, hostname=host, event_id=event_id, context=current_context()
        )
    except Exception as error:
        document = _stand_in(record, error, service=service, hostname=host, event_id=event_id)
    setattr(record, _DOCUMENT_ATTRIBUTE, document)
    return document


def record_json(record: logging.LogRecord, *, service: str, hostname: str | None = None) -> bytes:
    """:func:`record_document` as compact UTF-8 JSON, made once per record; never raises (a
    document that does not encode is replaced by its stand-in, as in :func:`record_document`)."""
    cached = getattr(record, _JSON_ATTRIBUTE, None)
    if isinstance(cached, bytes):
        return cached
    document = record_document(record, service=service, hostname=hostname)
    try:
        value = ecs_json(document)
    except Exception as error:  # a context value whose str() raises, a cycle: the stand-in
        event_id = str(document.get("event", {}).get("id", "")) or new_event_id()
        host = hostname or socket.gethostname()
        stand_in = _stand_in(record, error, service=service, hostname=host, event_id=event_id)
        setattr(record, _DOCUMENT_ATTRIBUTE, stand_in)
        value = ecs_json(stand_in)
    setattr(record, _JSON_ATTRIBUTE, value)
    return value


def unencodable_reason(record: logging.LogRecord) -> str | None:
    """Why no document of its own could be made of ``record`` (``None`` once it was)."""
    reason = getattr(record, _UNENCODABLE_ATTRIBUTE, None)
    return reason if isinstance(reason, str) else None


def _stand_in(
    record: logging.LogRecord,
    error: Exception,
    *,
    service: str,
    hostname: str,
    event_id: str,
) -> dict[str, Any]:
    document = unencodable_document(
        record, error, service=service, hostname=hostname, event_id=event_id
    )
    setattr(record, _UNENCODABLE_ATTRIBUTE, document["labels"]["encoding_error"])
    return document


class KafkaLogHandler(logging.Handler):
    """Sends each record as ECS JSON to ``topic``, keyed by ``service``; see the module doc."""

    def __init__(
        self,
        producer_factory: Callable[[], LogProducer],
        *,
        service: str,
        topic: str = "logs",
        buffer_size: int = 10_000,
        flush_timeout_s: float = 5.0,
        fallback: TextIO | None = None,
        hostname: str | None = None,
        level: int = logging.NOTSET,
        records_on_console: bool = False,
        notes_as_json: bool = False,
    ) -> None:
        """``producer_factory`` makes the producer when the first record arrives (no I/O here).
        ``records_on_console``: every record this handler gets is written to ``fallback`` by
        another handler too (:func:`~pipeline.logs.setup.configure_logging`'s console one), so
        a record that does not reach Kafka is not written there again; the counts still are.
        ``notes_as_json``: its own lines there are ECS JSON documents, as the records are (a
        JSON console: every line on it is one), rather than plain text."""
        if buffer_size <= 0:
            raise ValueError(f"buffer_size must be > 0, got {buffer_size}")
        super().__init__(level)
        self.service = service
        self.topic = topic
        self.flush_timeout_s = flush_timeout_s
        self.counters = HandlerCounters()
        self._factory = producer_factory
        self._buffer_size = buffer_size
        self._buffer: deque[bytes] = deque()  # appends and pops are atomic: no lock
        self._wake = threading.Event()  # set by flush and close: send now
        self._stopping = False
        self._fallback = fallback
        self._records_on_console = records_on_console
        self._notes_as_json = notes_as_json
        self._hostname = hostname or socket.gethostname()
        self._key = service.encode("utf-8")
        self._producer: LogProducer | None = None
        self._sender: threading.Thread | None = None
        self._pid = os.getpid()
        self._start_lock = threading.Lock()
        # Reentrant: configure_logging's SIGTERM handler closes the handler in the main thread,
        # which the signal may have caught inside a write of its own.
        self._fallback_lock = threading.RLock()
        self._closed = False
        #: How many records were not delivered, by reason (Kafka's, the client's, or ours at
        #: exit): the exit line names each, as it does each reason a record was not encoded.
        self._failures: Counter[str] = Counter()
        self._unencodable_reasons: Counter[str] = Counter()
        #: Set while close() takes back what Kafka did not acknowledge: the reports that
        #: follow say "purged", which is our doing; this is the reason (the flush timeout,
        #: or Kafka's refusal).
        self._purge_reason: str | None = None
        #: Kafka refused the connection or could not be reached (the producer's error_cb),
        #: and nothing was delivered since: a flush waits REFUSED_FLUSH_S at most.
        self._kafka_unusable: str | None = None
        #: The sender was still waiting for room in the producer's queue when close() came.
        self._queue_full = False
        #: Why there is no producer, once its factory failed.
        self._no_producer = "no producer"

    # ---- the logging thread ---------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name.startswith(_SELF_LOGGERS) or self._in_sender():
                self.counters.skipped += 1
                return
            value = record_json(record, service=self.service, hostname=self._hostname)
            if self._closed:
                self.counters.after_close += 1
                self._write_lost(value)
                return
            self.counters.emitted += 1
            reason = unencodable_reason(record)
            if reason is not None:
                # Its stand-in is not the line that was logged: it stays out of Elasticsearch,
                # goes where dropped lines go and is counted in the exit summary.
                self.counters.unencodable += 1
                self._unencodable_reasons[reason] += 1
                self._write_lost(value)
                return
            self._ensure_sender()
            if len(self._buffer) < self._buffer_size:
                self._buffer.append(value)
            else:
                self.counters.dropped += 1
                self._write_lost(value)
        except Exception:
            self.handleError(record)  # logging's policy: report on stderr, never raise

    def _in_sender(self) -> bool:
        return self._sender is not None and threading.current_thread() is self._sender

    def _ensure_sender(self) -> None:
        if self._sender is not None and self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid != os.getpid():  # forked: the parent's thread and producer are not ours
                self._pid = os.getpid()
                self._sender = None
                self._producer = None
                self._buffer = deque()
                self._wake = threading.Event()
            if self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_loop, name="kafka-log-handler", daemon=True
                )
                self._sender.start()

    def _write_lost(self, value: bytes) -> None:
        """A record that will not reach Kafka, on the fallback stream, unless a console handler
        wrote it there already (``records_on_console``: it was printed twice)."""
        if not self._records_on_console:
            self._write_fallback(value)

    def _write_note(self, text: str, level: int, function: str) -> None:
        """One of its own lines on the fallback stream: plain, or an ECS document."""
        if not self._notes_as_json:
            self._write_fallback(text.encode())
            return
        line = sys._getframe(1).f_lineno  # the caller's, as logging's own records say
        note = logging.LogRecord(__name__, level, __file__, line, text, None, None, function)
        self._write_fallback(record_json(note, service=self.service, hostname=self._hostname))

    def _write_fallback(self, value: bytes) -> None:
        stream = self._fallback or sys.stderr
        try:
            with self._fallback_lock:
                stream.write(value.decode("utf-8") + "\n")
                stream.flush()
        except Exception:  # a closed stderr must not break the program either
            pass

    # ---- the sender thread ----------------------------------------------------------------

    def _send_loop(self) -> None:
        try:
            self._producer = self._factory()
        except Exception as error:
            self._write_note(
                f"kafka log handler: no producer ({error})", logging.ERROR, "_send_loop"
            )
            self._producer = None
            self._no_producer = f"no producer: {error}"
        buffer = self._buffer
        busy = False
        while True:
            # Every 20 ms while records come; idle, every 100 ms (fewer wake-ups for nothing).
            self._wake.wait(SEND_EVERY_S if busy else _POLL_S)
            self._wake.clear()
            stopping = self._stopping
            busy = bool(buffer)
            # Closing: what is still buffered is close()'s to count, not ours to try.
            while buffer and not self._closed:
                if not self._send(buffer.popleft()):
                    break
            if self._producer is not None:
                self._producer.poll(0)
            if stopping:
                return

    def _send(self, value: bytes) -> bool:
        """Hand one record to the producer; ``False`` when closing stopped the waiting for
        room, with the record back at the head of the buffer (close() counts it there: counted
        here, after close() counted the rest, it was missing from the exit line)."""
        producer = self._producer
        if producer is None:
            self._fail(value, self._no_producer)
            return True
        while True:
            try:
                producer.produce(
                    self.topic, value=value, key=self._key, on_delivery=self._delivered
                )
                producer.poll(0)
                return True
            except BufferError:
                # librdkafka's own queue is full: serve reports until there is room; meanwhile
                # the bounded buffer fills up and emit() drops (it never waits for us).
                producer.poll(_POLL_S)
                if self._closed:
                    self._queue_full = True
                    self._buffer.appendleft(value)
                    return False
            except Exception as error:  # refused at once: a record over the size limit, say
                self._fail(value, error.args[0].str() if _is_kafka(error) else str(error))
                return True

    def _fail(self, value: bytes, reason: str) -> None:
        self.counters.failed += 1
        self._failures[reason] += 1
        self._write_lost(value)

    def kafka_error(self, error: Any) -> None:
        """The producer's ``error_cb``: remembers that Kafka refused the connection or that no
        broker could be reached (:func:`kafka_unusable`), until a record is delivered again.
        A refusal is not replaced by the "all brokers down" librdkafka reports after it."""
        unusable = kafka_unusable(error)
        if unusable == KAFKA_REFUSED or (unusable is not None and self._kafka_unusable is None):
            self._kafka_unusable = unusable

    def _delivered(self, error: Any, message: Any) -> None:
        if error is None:
            self.counters.delivered += 1
            self._kafka_unusable = None  # it takes records again
            return
        if self._purge_reason is not None:
            reason = self._purge_reason
        else:
            reason = error.str() if hasattr(error, "str") else str(error)
        value = message.value() if message is not None else None
        if isinstance(value, bytes):
            self._fail(value, reason)
        else:
            self.counters.failed += 1
            self._failures[reason] += 1

    # ---- shutdown -------------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until what was buffered reached Kafka (or ``timeout_s``, default the handler's);
        once closed, at once (close() waited already, and took back what Kafka did not take)."""
        if self._closed:
            return
        deadline = time.monotonic() + (self.flush_timeout_s if timeout_s is None else timeout_s)
        sender = self._sender
        if sender is None or not sender.is_alive():
            return
        refused_deadline: float | None = None

        def left() -> float:
            """The time left to wait: till the deadline, or REFUSED_FLUSH_S from when a flush
            saw that Kafka cannot be used (a delivery since makes it the deadline again)."""
            nonlocal refused_deadline
            now = time.monotonic()
            if self._kafka_unusable is None:
                return deadline - now
            if refused_deadline is None:
                refused_deadline = now + REFUSED_FLUSH_S
            return min(deadline, refused_deadline) - now

        self._wake.set()
        while self._buffer and left() > 0:
            time.sleep(0.005)
        producer = self._producer
        if producer is None:
            return
        # In slices, so that a refusal reported meanwhile (the flush serves error_cb) ends the
        # waiting: one flush for the whole timeout waited all of it. The slices never ask for
        # more than the timeout in all.
        budget = deadline - time.monotonic()
        while (wait := min(left(), budget)) > 0:
            step = min(_FLUSH_SLICE_S, wait)
            budget -= step
            try:
                if producer.flush(step) == 0:
                    return
            except Exception as error:  # a fatal error: the producer delivers nothing more
                if not _is_kafka(error):
                    raise
                # Counted below as not delivered, for that reason (this runs at exit: a
                # traceback from an atexit callback, after the program's own error line).
                self._kafka_unusable = kafka_unusable(error.args[0]) or KAFKA_REFUSED
                return

    def close(self) -> None:
        """Flush (bounded), stop the sender; what Kafka still holds goes to the fallback stream."""
        if self._closed:
            return
        # A second Ctrl-C while the program exits (this runs at exit) stops the waiting for
        # Kafka; what it did not take goes to the fallback stream below, with no traceback.
        # (confluent-kafka's flush, interrupted by a signal, raises SystemError.)
        with contextlib.suppress(KeyboardInterrupt, SystemError):
            self.flush()
        self._closed = True
        sender = self._sender
        if sender is not None and sender.is_alive():
            self._stopping = True
            self._wake.set()
            # It stops within one wait for room in the producer (_POLL_S), the record it held
            # put back in the buffer: counted below, with the others, before the exit line.
            with contextlib.suppress(KeyboardInterrupt, SystemError):
                sender.join(timeout=_STOP_SENDER_S)
        # Kafka said it cannot be used: the exit did not wait the flush timeout for it, and
        # what it did not take is counted for that reason alone (the program's own error line
        # said more), in one short line.
        unusable = self._kafka_unusable
        if unusable is not None:
            not_sent = unusable
        elif self._queue_full:
            not_sent = _QUEUE_FULL
        else:
            not_sent = (
                f"never sent: still buffered when the {self.flush_timeout_s:g} s flush "
                "timeout at exit ended"
            )
        while self._buffer:  # what the sender did not get to (Kafka was away): fallback stream
            self._fail(self._buffer.popleft(), not_sent)
        producer = self._producer
        if producer is not None:
            # What Kafka has not acknowledged by now is taken back: its delivery reports
            # (served by the flush) count it and write it to the fallback stream. Left in the
            # producer, it was only a count, and the interpreter's exit waited for it again.
            reason = self._purge_reason = unusable or (
                f"Kafka did not acknowledge them within the {self.flush_timeout_s:g} s flush "
                "timeout at exit"
            )
            try:
                with contextlib.suppress(KeyboardInterrupt, SystemError):
                    producer.purge(in_queue=True, in_flight=True, blocking=False)
                    producer.flush(0)
            except Exception as error:  # a fatal producer: no delivery report will come
                if not _is_kafka(error):
                    raise
                held = len(producer)
                self.counters.failed += held
                self._failures[reason] += held
            self._purge_reason = None
        self._report_losses()
        super().close()

    def _report_losses(self) -> None:
        """One line on the fallback stream for the records that never reached Kafka (each was
        written there instead, as it came), so that a count is seen where they are: how many,
        for each reason."""
        parts = []
        if self.counters.dropped:
            parts.append(
                f"{counted(self.counters.dropped, 'record')} dropped (the buffer of "
                f"{self._buffer_size:,} was full: Kafka was away or slow, or records came "
                "faster than they could be sent)"
            )
        parts += _by_reason(self._failures, "not delivered ({})")
        if self.counters.after_close:
            parts.append(
                f"{counted(self.counters.after_close, 'record')} not sent (logged by another "
                "thread while the handler closed)"
            )
        parts += _by_reason(self._unencodable_reasons, "dropped (could not be encoded: {})")
        if parts:
            self._write_note(
                f"kafka log handler: {'; '.join(parts)}; they are only in this stream",
                logging.WARNING,
                "close",
            )

    def describe(self) -> Mapping[str, int]:
        """The counters as a plain mapping (for metrics and tests)."""
        return dict(vars(self.counters))


def _by_reason(reasons: Counter[str], what: str) -> list[str]:
    """``["2 records not delivered (reason)", ...]``, the most frequent reason first; past
    :data:`_REASONS_NAMED` reasons, the rest together (each record's own reason is with it on
    the fallback stream, for a record that could not be encoded)."""
    ranked = reasons.most_common()
    parts = [
        f"{counted(n, 'record')} {what.format(reason)}" for reason, n in ranked[:_REASONS_NAMED]
    ]
    rest = sum(n for _, n in ranked[_REASONS_NAMED:])
    if rest:
        others = counted(len(ranked) - _REASONS_NAMED, "other reason")
        parts.append(f"{counted(rest, 'record')} {what.format(others)}")
    return parts
