"""The event producer: envelope events to Kafka, safely, with every delivery accounted for.

Over confluent-kafka's ``Producer`` (passed in, built by :mod:`pipeline.clients`):

- idempotent with ``acks=all`` and Kafka's murmur2 partitioner (set by ``producer_config``);
- each event's delivery comes back as a :class:`Delivery`, through a callback
  (:meth:`EventProducer.send`), a future (:meth:`EventProducer.send_future`, awaitable with
  ``asyncio.wrap_future``) or a blocking call (:meth:`EventProducer.send_and_wait`);
- a failure nobody asked to hear about is kept, and :meth:`EventProducer.flush` raises it: no
  failure is ever swallowed;
- a full local queue is served (poll) and retried until ``queue_full_timeout_s``;
- librdkafka's statistics (:class:`ProducerStats`) give the count of re-sent produce requests;
- a context manager that flushes on exit; an optional transactional mode for
  read-process-write processors.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, NamedTuple, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from pipeline.clients import build_producer, event_producer_config
from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.errors import PipelineError
from pipeline.settings import KafkaSettings, ProducerSettings


class ProducerClient(Protocol):
    """What we use of ``confluent_kafka.Producer``."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...
    def init_transactions(self, timeout: float = ...) -> None: ...
    def begin_transaction(self) -> None: ...
    def commit_transaction(self, timeout: float = ...) -> None: ...
    def abort_transaction(self, timeout: float = ...) -> None: ...
    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = ...
    ) -> None: ...


class Delivery(NamedTuple):
    """What became of one event: where it landed, or why it did not."""

    event_id: str
    topic: str
    key: bytes | None
    partition: int | None
    offset: int | None
    error: str | None = None
    retriable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def _event_id(headers: Sequence[tuple[str, bytes]]) -> str:
    for name, value in headers:
        if name == "ce_id":
            return value.decode("utf-8", errors="replace")
    return "?"


def _delivery(event_id: str, error: KafkaError | None, produced: Message) -> Delivery:
    topic, key = produced.topic() or "", produced.key()
    if error is None:
        return Delivery(event_id, topic, key, produced.partition(), produced.offset())
    return Delivery(event_id, topic, key, None, None, error.str(), error.retriable())


class DeliveryError(PipelineError):
    """One or more events were not acknowledged by the broker."""

    def __init__(self, failures: Sequence[Delivery]) -> None:
        self.failures = tuple(failures)
        first = self.failures[0]
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        super().__init__(f"event {first.event_id} to {first.topic} failed: {first.error}{more}")


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


class EventProducer:
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
    ) -> None:
        self._client = client
        self._queue_full_timeout_s = queue_full_timeout_s
        self._flush_timeout_s = flush_timeout_s
        self._unobserved_failures: list[Delivery] = []
        self._lock = threading.Lock()
        self.counters = ProducerCounters()
        self.stats = stats or ProducerStats()

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
        if isinstance(event, Event):
            message, event_id = encode(event), event.id
        else:
            message, event_id = event, _event_id(event.headers)
        if on_delivery is None:
            # The bulk path: no per-event objects unless the event fails (librdkafka does not
            # hand a failed message's headers back, so its id travels with the callback).
            self._produce(topic, message, partial(self._bulk_delivered, event_id))
            return

        def delivered(error: KafkaError | None, produced: Message) -> None:
            result = _delivery(event_id, error, produced)
            self._count(result)
            on_delivery(result)

        self._produce(topic, message, delivered)

    def _bulk_delivered(self, event_id: str, error: KafkaError | None, produced: Message) -> None:
        if error is None:
            with self._lock:
                self.counters.sent += 1
            return
        failure = _delivery(event_id, error, produced)
        self._count(failure)
        with self._lock:
            self._unobserved_failures.append(failure)

    def _count(self, result: Delivery) -> None:
        with self._lock:
            if result.error is None:
                self.counters.sent += 1
            else:
                self.counters.failed += 1

    def send_future(self, topic: str, event: Event | KafkaMessage) -> Future[Delivery]:
        """Queue one event; the future completes with its :class:`Delivery` (ok or not).

        Someone must call :meth:`poll` (or run :meth:`polling`) for it to complete; in asyncio
        code, ``await asyncio.wrap_future(producer.send_future(...))``.
        """
        future: Future[Delivery] = Future()
        self.send(topic, event, future.set_result)
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

    def _produce(
        self, topic: str, message: KafkaMessage, delivered: Callable[[Any, Any], None]
    ) -> None:
        deadline: float | None = None
        while True:
            try:
                self._client.produce(
                    topic,
                    value=message.value,
                    key=message.key,
                    headers=[*message.headers],
                    on_delivery=delivered,
                )
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry.
                self.counters.queue_full_waits += 1
                now = time.monotonic()
                deadline = deadline or now + self._queue_full_timeout_s
                if now > deadline:
                    raise PipelineError(
                        "the producer's local queue stayed full for "
                        f"{self._queue_full_timeout_s:.0f} s (is Kafka reachable?)"
                    ) from None
                self._client.poll(0.05)
        self._client.poll(0)

    # ---- delivery reports -----------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports (callbacks, futures); returns how many were served."""
        return self._client.poll(timeout_s)

    @contextmanager
    def polling(self, interval_s: float = 0.05) -> Iterator[None]:
        """Serve delivery reports from a background thread while the block runs (for asyncio)."""
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                self._client.poll(interval_s)

        thread = threading.Thread(target=serve, name="event-producer-poll", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every queued event; raise :class:`DeliveryError` for unobserved failures."""
        timeout = self._flush_timeout_s if timeout_s is None else timeout_s
        remaining = self._client.flush(timeout)
        if remaining:
            raise PipelineError(
                f"{remaining} events were still unacknowledged after {timeout:.0f} s"
            )
        with self._lock:
            failures, self._unobserved_failures = self._unobserved_failures, []
        if failures:
            raise DeliveryError(failures)

    @property
    def resent(self) -> int:
        """Messages transmitted more than once (as of the last statistics report)."""
        done = self.counters.sent + self.counters.failed
        return max(0, self.stats.transmitted - done)

    def refresh_stats(self, timeout_s: float = 3.0) -> None:
        """Wait for one more statistics report, so the figures include the last deliveries."""
        seen = self.stats.reports
        deadline = time.monotonic() + timeout_s
        while self.stats.reports == seen and time.monotonic() < deadline:
            self._client.poll(0.1)

    # ---- transactions ------------------------------------------------------------------------

    def init_transactions(self, timeout_s: float = 30.0) -> None:
        """Once, before the first transaction (needs ``transactional.id`` in the config)."""
        self._transactional_call(self._client.init_transactions, timeout_s)

    @contextmanager
    def transaction(self, timeout_s: float = 30.0) -> Iterator[EventProducer]:
        """Everything sent in the block commits together, or aborts if the block raises.

        1. begin; 2. the block sends (and may call :meth:`send_offsets`); 3. commit, which
        flushes first. An exception in the block aborts and is re-raised.
        """
        self._transactional_call(self._client.begin_transaction)
        try:
            yield self
        except BaseException:
            self._transactional_call(self._client.abort_transaction, timeout_s)
            raise
        self._transactional_call(self._client.commit_transaction, timeout_s)

    def send_offsets(
        self, positions: list[TopicPartition], group_metadata: Any, timeout_s: float = 30.0
    ) -> None:
        """Commit a consumer's positions as part of the current transaction."""
        self._transactional_call(
            self._client.send_offsets_to_transaction, positions, group_metadata, timeout_s
        )

    @staticmethod
    def _transactional_call(call: Callable[..., None], *args: Any) -> None:
        try:
            call(*args)
        except KafkaException as error:
            raise PipelineError(
                f"transaction step {call.__name__} failed: {error.args[0]}"
            ) from error

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
    **overrides: Any,
) -> EventProducer:
    """An :class:`EventProducer` over a new idempotent producer; transactional if given an id."""
    stats = ProducerStats()
    config: dict[str, Any] = {**event_producer_config(producer), "stats_cb": stats.record}
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        # librdkafka requires delivery.timeout.ms <= transaction.timeout.ms.
        config["transaction.timeout.ms"] = max(60_000, producer.delivery_timeout_ms)
    client = build_producer(kafka, **{**config, **overrides})
    return EventProducer(client, stats=stats, queue_full_timeout_s=producer.queue_full_timeout_s)
