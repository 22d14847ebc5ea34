"""The event producer: envelope events to Kafka, safely, with every delivery accounted for.

Over confluent-kafka's ``Producer`` (passed in, built by :mod:`pipeline.kafka.clients`):

- idempotent with ``acks=all`` and Kafka's murmur2 partitioner (set by ``producer_config``);
- each event's delivery comes back as a :class:`Delivery`, through a callback
  (:meth:`EventProducer.send`), a future (:meth:`EventProducer.send_future`, served by a
  thread: :meth:`EventProducer.polling`), an asyncio future served on the event loop itself
  (:meth:`EventProducer.send_awaitable` with :meth:`EventProducer.serving_on_loop`, the
  cheaper way in asyncio code) or a blocking call (:meth:`EventProducer.send_and_wait`);
- a failure nobody asked to hear about is kept, and :meth:`EventProducer.flush` raises it: no
  failure is ever swallowed;
- a full local queue is served (poll) and retried until ``queue_full_timeout_s``;
- librdkafka's statistics (:class:`ProducerStats`) give the count of re-sent produce requests;
- a context manager that flushes on exit; an optional transactional mode for
  read-process-write processors (:mod:`pipeline.kafka.transactions`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from pipeline.envelope import Event, KafkaMessage
from pipeline.envelope.binary_mode import encoded_parts
from pipeline.errors import PipelineError
from pipeline.kafka.clients import build_producer, event_producer_config
from pipeline.kafka.delivery import (
    Delivery,
    DeliveryError,
    FlushTimeout,
    ProduceRefused,
    TransactionAborted,
    delivery_of,
    event_id_of,
)
from pipeline.kafka.transactions import ProducerTransactions
from pipeline.settings import KafkaSettings, ProducerSettings

__all__ = [
    "Delivery",
    "DeliveryError",
    "EventProducer",
    "FlushTimeout",
    "ProduceRefused",
    "ProducerClient",
    "ProducerCounters",
    "ProducerStats",
    "TransactionAborted",
    "build_event_producer",
]

_log = logging.getLogger(__name__)

#: Sends between two servings of delivery reports on the bulk path.
_POLL_EVERY = 64


class ProducerClient(Protocol):
    """What we use of ``confluent_kafka.Producer``."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...
    def __len__(self) -> int: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...
    def purge(self, in_queue: bool = ..., in_flight: bool = ..., blocking: bool = ...) -> None: ...
    def init_transactions(self, timeout: float = ...) -> None: ...
    def begin_transaction(self) -> None: ...
    def commit_transaction(self, timeout: float = ...) -> None: ...
    def abort_transaction(self, timeout: float = ...) -> None: ...
    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = ...
    ) -> None: ...


def _settle(future: asyncio.Future[Delivery], delivery: Delivery) -> None:
    """Complete ``future`` on its loop, unless its caller gave up (cancelled it)."""
    if not future.done():
        future.set_result(delivery)


@dataclass
class ProducerCounters:
    """Running totals of one producer."""

    sent: int = 0
    failed: int = 0
    queue_full_waits: int = 0


class ProducerStats:
    """librdkafka's statistics (``stats_cb``): what the client did under the hood.

    ``transmitted`` counts every time a message went to a broker, so after a flush
    ``transmitted - acknowledged`` is how many were sent again (after a broker outage, say);
    ``retries`` counts re-sent produce requests and ``disconnects`` lost broker connections.
    """

    def __init__(self) -> None:
        self.retries = 0
        self.transmitted = 0
        self.disconnects = 0
        self.reports = 0

    def record(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        brokers = stats.get("brokers", {}).values()
        self.retries = sum(int(broker.get("txretries", 0)) for broker in brokers)
        self.disconnects = sum(int(broker.get("disconnects", 0)) for broker in brokers)
        self.transmitted = sum(
            int(partition.get("txmsgs", 0))
            for topic in stats.get("topics", {}).values()
            for number, partition in topic.get("partitions", {}).items()
            if number != "-1"  # the "unassigned" pseudo-partition
        )
        self.reports += 1


def _refusal(topic: str, error: KafkaException) -> ProduceRefused:
    """What librdkafka's refusal to queue a message (``produce`` raising) says, for ``topic``."""
    refusal = error.args[0]
    too_large = refusal.code() == KafkaError.MSG_SIZE_TOO_LARGE
    return ProduceRefused(topic, refusal.str(), too_large=too_large)


def _report_bulk_event(
    producer: EventProducer, event_id: str, error: KafkaError | None, produced: Message
) -> None:
    """The delivery report of one event sent on the bulk path: a failure is kept, to be raised
    by the next flush; a success (most reports) ends at the first line."""
    if error is not None:
        producer._keep_bulk_failure(event_id, error, produced)


def _report_bulk_message(
    producer: EventProducer,
    headers: Sequence[tuple[str, bytes]],
    error: KafkaError | None,
    produced: Message,
) -> None:
    """:func:`_report_bulk_event` for a pre-encoded message, named by its ``ce_id`` header."""
    if error is not None:
        producer._keep_bulk_failure(event_id_of(headers), error, produced)


class EventProducer(ProducerTransactions):
    """Produces :class:`Event` objects (or pre-encoded messages) and accounts for each delivery.

    Use as a context manager; on exit it flushes and raises :class:`DeliveryError` for any
    failure that no callback or future was given.
    """

    def __init__(
        self,
        client: ProducerClient,
        *,
        stats: ProducerStats | None = None,
        queue_full_timeout_s: float = 30.0,
        flush_timeout_s: float = 60.0,
        failures_only: bool = False,
    ) -> None:
        self._client = client
        # The client reports failed deliveries only (librdkafka's delivery.report.only.error):
        # nothing can wait for a success, so sends that would are refused.
        self._failures_only = failures_only
        self._queue_full_timeout_s = queue_full_timeout_s
        self._flush_timeout_s = flush_timeout_s
        self._unobserved_failures: list[Delivery] = []
        self._lock = threading.Lock()
        # Successes are not counted one by one (that would cost every event a locked callback):
        # sent = queued - still in the client - failed. send() is for one thread at a time;
        # delivery reports may be served by another (polling()), or by the same one
        # (serving_on_loop()).
        self._queued = 0
        self._failed = 0
        self._queue_full_waits = 0
        self.stats = stats or ProducerStats()
        self._reports_due: asyncio.Event | None = None
        self._polling_threads = 0  # polling() blocks running
        self._told_unserved = False  # the warning of send_awaitable outside serving_on_loop
        self._given_up = False  # give_up() was called: send_awaitable refuses

    # ---- sending -------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        event: Event | KafkaMessage,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        """Queue one event; ``on_delivery`` is called (from :meth:`poll`/:meth:`flush`) once.

        Without ``on_delivery`` a failure is kept and raised by the next :meth:`flush`.
        """
        # ``type() is`` first: pydantic's isinstance check costs more than the rest of a send.
        encoded = type(event) is KafkaMessage
        if on_delivery is None and not encoded:
            # The bulk path of an Event, the hot one. Its one per-event object is the callback
            # carrying what names the event in a failure (librdkafka does not hand a failed
            # message's headers back): a partial of a plain function, not of a bound method,
            # whose object each event would keep alive until its report too (a third more).
            # Nothing runs in Python for a success but that callback's first line, and the
            # headers made here are let go once librdkafka copied them. Written out rather than
            # through send_encoded, as is its bookkeeping: that call was a tenth of a send.
            key, value, headers = encoded_parts(event)  # type: ignore[arg-type]
            report = partial(_report_bulk_event, self, event.id)  # type: ignore[union-attr]
            try:
                self._client.produce(topic, value, key, -1, report, None, 0, headers)
            except BufferError:
                self._produce_when_there_is_room(topic, key, value, headers, report)
            except KafkaException as error:
                raise _refusal(topic, error) from None
            queued = self._queued = self._queued + 1
            if not queued % _POLL_EVERY:
                self._client.poll(0)
            return
        if encoded:
            key, value, headers = event.key, event.value, event.headers  # type: ignore[union-attr]
        else:
            key, value, headers = encoded_parts(event)  # type: ignore[arg-type]
        if on_delivery is None:  # the bulk path of a pre-encoded message
            self.send_encoded(
                topic, key, value, headers, partial(_report_bulk_message, self, headers)
            )
            return
        if self._failures_only:
            raise PipelineError(
                "this producer reports failed deliveries only (built with failures_only=True): "
                "it cannot tell when an event was acknowledged"
            )

        def delivered(error: KafkaError | None, produced: Message) -> None:
            result = delivery_of(event_id_of(headers), error, produced)
            self._count(result)
            on_delivery(result)

        self.send_encoded(topic, key, value, headers, delivered)

    def send_parts(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, str | bytes]],
        *,
        event_id: str,
    ) -> None:
        """Queue one encoded message on :meth:`send`'s bulk path, from parts kept elsewhere
        (the outbox relay's rows): a failure is kept, named by ``event_id``, and raised by the
        next :meth:`flush`; a refusal raises :class:`ProduceRefused` (nothing was queued).

        ``key`` and header values may be text (sent as UTF-8, by librdkafka's client itself,
        so no bytes are made here for them): a stored row's columns go as they are read. A
        header value with a NUL character must be bytes: confluent-kafka hands a text header
        value to librdkafka as a C string, which ends at the first NUL (keys do not).
        """
        self.send_encoded(topic, key, value, headers, partial(_report_bulk_event, self, event_id))

    def send_encoded(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, str | bytes]],
        on_report: Callable[[KafkaError | None, Message], None],
    ) -> None:
        """Queue one encoded message (:func:`~pipeline.envelope.encode`'s parts) for a hot loop.

        ``on_report`` gets librdkafka's delivery report as it is, ``(error, message)`` (``error``
        None when delivered), from :meth:`poll`/:meth:`flush`: no :class:`Delivery` is made and
        nothing is counted here, so the caller counts failures (:attr:`counters` and
        :attr:`troubled` do not see them; see :meth:`refresh_stats`). A refusal raises
        :class:`ProduceRefused` (nothing was queued); a full queue is served and retried.
        """
        try:
            # Positional, in confluent-kafka's order (topic, value, key, partition, callback,
            # on_delivery, timestamp, headers; -1 is "by the partitioner", 0 "now"): given any
            # keyword, its C argument parser looks every one of its eight names up in the
            # keywords, a fifth of the call's cost on this path.
            self._client.produce(topic, value, key, -1, on_report, None, 0, headers)
        except BufferError:
            self._produce_when_there_is_room(topic, key, value, headers, on_report)
        except KafkaException as error:
            raise _refusal(topic, error) from None
        # Serve delivery reports every so many sends rather than after each: the same reports,
        # a tenth of the calls (a full queue and flush() serve them at once anyway).
        queued = self._queued = self._queued + 1
        if not queued % _POLL_EVERY:
            self._client.poll(0)

    def _keep_bulk_failure(self, event_id: str, error: KafkaError, produced: Message) -> None:
        failure = delivery_of(event_id, error, produced)
        self._count(failure)
        with self._lock:
            self._unobserved_failures.append(failure)

    def _count(self, result: Delivery) -> None:
        if result.error is not None:
            with self._lock:
                self._failed += 1

    @property
    def counters(self) -> ProducerCounters:
        """Acknowledged and failed events so far (exact once flushed), and queue-full waits."""
        failed = self._failed
        in_client = len(self._client)
        return ProducerCounters(
            sent=max(0, self._queued - in_client - failed),
            failed=failed,
            queue_full_waits=self._queue_full_waits,
        )

    def send_future(self, topic: str, event: Event | KafkaMessage) -> Future[Delivery]:
        """Queue one event; the future completes with its :class:`Delivery` (ok or not).

        Someone must call :meth:`poll` (or run :meth:`polling`) for it to complete; in asyncio
        code, ``await asyncio.wrap_future(producer.send_future(...))``.
        """
        future: Future[Delivery] = Future()

        def resolve(delivery: Delivery) -> None:
            # A cancelled future (a caller that gave up waiting) must not break the poll loop.
            if future.set_running_or_notify_cancel():
                future.set_result(delivery)

        self.send(topic, event, resolve)
        return future

    def send_awaitable(self, topic: str, event: Event | KafkaMessage) -> asyncio.Future[Delivery]:
        """Queue one event from a coroutine; the asyncio future completes with its
        :class:`Delivery` (ok or not) once its report is served: by :meth:`serving_on_loop`, on
        the loop itself, with no thread and no hand-over between threads (what
        ``asyncio.wrap_future(send_future(...))`` pays for every event).

        A report served on another thread (a :meth:`flush` while stopping) is handed to the
        loop; one served after the loop closed, or for a caller that gave up, is dropped.
        """
        if self._given_up:
            raise PipelineError(
                "the producer gave its events up (the program is stopping at once): nothing "
                "was sent"
            )
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        future: asyncio.Future[Delivery] = loop.create_future()

        def resolve(delivery: Delivery) -> None:
            if loop.is_closed():
                return
            if threading.get_ident() == loop_thread:
                _settle(future, delivery)
            else:
                with suppress(RuntimeError):  # the loop closed in between
                    loop.call_soon_threadsafe(_settle, future, delivery)

        self.send(topic, event, resolve)
        due = self._reports_due
        if due is not None:
            due.set()
        elif not self._polling_threads and not self._told_unserved:
            # Nothing serves its report until a poll() or flush(): a forgotten serving_on_loop
            # made the await wait for ever, without a word.
            self._told_unserved = True
            _log.warning(
                "send_awaitable outside `async with producer.serving_on_loop():` (or "
                "producer.polling()): its delivery report waits for a poll() or flush()"
            )
        return future

    def send_and_wait(
        self, topic: str, event: Event | KafkaMessage, timeout_s: float | None = None
    ) -> Delivery:
        """Send one event and block until the broker acknowledged it; raise if it failed."""
        future = self.send_future(topic, event)
        deadline = time.monotonic() + (timeout_s or self._flush_timeout_s)
        while not future.done():
            if time.monotonic() > deadline:
                raise PipelineError(f"no acknowledgement for an event to {topic} in time")
            self._client.poll(0.05)
        delivery = future.result()
        if not delivery.ok:
            raise DeliveryError([delivery])
        return delivery

    def _produce_when_there_is_room(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, str | bytes]],
        delivered: Callable[[Any, Any], None],
    ) -> None:
        """The local queue is full: serve delivery reports to make room, then retry."""
        deadline = time.monotonic() + self._queue_full_timeout_s
        while True:
            self._queue_full_waits += 1
            if time.monotonic() > deadline:
                raise PipelineError(
                    "the producer's local queue stayed full for "
                    f"{self._queue_full_timeout_s:.0f} s (is Kafka reachable?)"
                )
            self._client.poll(0.05)
            try:
                self._client.produce(topic, value, key, -1, delivered, None, 0, headers)
                return
            except BufferError:
                continue

    # ---- delivery reports -----------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports (callbacks, futures); returns how many were served."""
        return self._client.poll(timeout_s)

    @contextmanager
    def polling(self, interval_s: float = 0.05) -> Iterator[None]:
        """Serve delivery reports from a background thread while the block runs (for
        :meth:`send_future`; in asyncio code :meth:`serving_on_loop` costs less)."""
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    self._client.poll(interval_s)
                except Exception:  # a failing callback must not stop every later report
                    _log.exception("a delivery callback failed")

        thread = threading.Thread(target=serve, name="event-producer-poll", daemon=True)
        thread.start()
        self._polling_threads += 1
        try:
            yield
        finally:
            self._polling_threads -= 1
            stop.set()
            thread.join()

    @asynccontextmanager
    async def serving_on_loop(self, interval_s: float = 0.001) -> AsyncIterator[None]:
        """Serve delivery reports on the running event loop while the block runs (for
        :meth:`send_awaitable`): every ``interval_s`` while some are due, asleep otherwise
        (woken by the next send). Reports still due after the block are served by the next
        :meth:`poll` or :meth:`flush`.
        """
        due = self._reports_due = asyncio.Event()
        client = self._client
        poll = client.poll

        async def serve() -> None:
            while True:
                try:
                    poll(0)
                except Exception:  # a failing callback must not stop every later report
                    _log.exception("a delivery callback failed")
                if len(client):
                    await asyncio.sleep(interval_s)
                else:
                    due.clear()
                    await due.wait()

        server = asyncio.create_task(serve(), name="event-producer-reports")
        try:
            yield
        finally:
            self._reports_due = None
            server.cancel()
            with suppress(asyncio.CancelledError):
                await server

    def give_up(self) -> None:
        """Give up every event not acknowledged yet, queued or in flight (one in flight may still
        reach the broker), and take no more through :meth:`send_awaitable` (it raises
        :class:`PipelineError`): for a server stopping at once, whose requests then get their
        answers now. Each delivery report says its event was purged (``Local: Purged in
        queue`` or ``in flight``), served as any other report, at once where
        :meth:`serving_on_loop` serves them."""
        self._given_up = True
        self._client.purge(in_queue=True, in_flight=True, blocking=False)
        due = self._reports_due
        if due is not None:
            due.set()

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every queued event; raise :class:`DeliveryError` for unobserved failures,
        :class:`FlushTimeout` if some are still unacknowledged after ``timeout_s``."""
        timeout = self._flush_timeout_s if timeout_s is None else timeout_s
        remaining = self._client.flush(timeout)
        if remaining:
            raise FlushTimeout(remaining, timeout)
        with self._lock:
            failures, self._unobserved_failures = self._unobserved_failures, []
        if failures:
            raise DeliveryError(failures)

    @property
    def resent(self) -> int:
        """Messages transmitted more than once (as of the last statistics report)."""
        done = self._queued - len(self._client)
        return max(0, self.stats.transmitted - done)

    @property
    def troubled(self) -> bool:
        """Whether anything went wrong that the statistics count: a failed delivery, or in the
        reports so far a lost connection, a retried request or a message sent again."""
        return bool(self._failed or self.stats.disconnects or self.stats.retries or self.resent)

    def refresh_stats(self, timeout_s: float = 3.0, *, failures: int = 0) -> None:
        """After a flush, bring the statistics up to date when they show trouble.

        A report comes every ``statistics.interval.ms`` (1 s by default), so waiting for one
        costs up to that long: a run without trouble in any report so far does not wait, and
        its figures are those of the last report. With trouble, it waits for two reports made
        after this call (the first served may have been made before the last deliveries and
        waited in the queue), so every retry is counted. Deliveries are not affected: the
        flush has already waited for each one. ``failures``: failed deliveries the caller
        counted itself (those of :meth:`send_encoded`), which are trouble too.
        """
        self._client.poll(0)  # serve the reports already made
        if not (self.troubled or failures):
            return
        seen = self.stats.reports
        deadline = time.monotonic() + timeout_s
        while self.stats.reports < seen + 2 and time.monotonic() < deadline:
            self._client.poll(0.1)

    # ---- context manager ---------------------------------------------------------------------

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._client.flush(self._flush_timeout_s)


def build_event_producer(
    kafka: KafkaSettings,
    producer: ProducerSettings,
    *,
    transactional_id: str | None = None,
    failures_only: bool = False,
    **overrides: Any,
) -> EventProducer:
    """An :class:`EventProducer` over a new idempotent producer; transactional if given an id.

    With ``failures_only`` the client reports failed deliveries only (librdkafka's
    ``delivery.report.only.error``): a success then costs no report (a message object made and
    a callback run for every event, about a fifth of the outbox relay's sending thread), and the
    producer only sends on its bulk path (:meth:`EventProducer.send` without ``on_delivery``,
    :meth:`~EventProducer.send_parts`, :meth:`~EventProducer.send_encoded`, then
    :meth:`~EventProducer.flush`, which raises every failure); a send that waits for its
    acknowledgement raises :class:`~pipeline.errors.PipelineError`.
    """
    stats = ProducerStats()
    config: dict[str, Any] = {**event_producer_config(producer), "stats_cb": stats.record}
    if failures_only:
        config["delivery.report.only.error"] = True
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        # librdkafka requires delivery.timeout.ms <= transaction.timeout.ms.
        config["transaction.timeout.ms"] = max(60_000, producer.delivery_timeout_ms)
    client = build_producer(kafka, **{**config, **overrides})
    # A full queue drains as librdkafka delivers or gives up on what it holds: wait at least
    # as long as it may keep trying one event.
    room_timeout_s = producer.queue_full_timeout_s or producer.delivery_timeout_ms / 1000 + 10
    return EventProducer(
        client, stats=stats, queue_full_timeout_s=room_timeout_s, failures_only=failures_only
    )
