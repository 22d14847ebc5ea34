"""Replaying recorded messages into Kafka: keys, values, headers and per-partition order kept.

:func:`replay_into_kafka`, for each message in order:

1. its target topic (the recorded one, or ``topic``) is checked once, before its first message
   is sent: it must exist and, with ``preserve_partitions``, have the recorded partition;
2. with ``rewrite_ids`` its ``ce_id`` header gets a fresh event id (rewrite.py);
3. it waits until the message is due (``pacing``, pacing.py);
4. it is produced with its recorded key, value and headers (null values and duplicate names
   included), to its recorded partition or to the one murmur2 gives its key; without a key,
   to its recorded partition modulo the target's count (routing.py).

The producer is idempotent with ``acks=all`` (``pipeline.kafka.clients.producer_config``): a
retry after a lost acknowledgement neither duplicates nor reorders a partition's messages.
Then everything is flushed: the summary counts acknowledged messages. Messages get new
timestamps (their producing time); the recorded ones only pace the replay.

Failures: :class:`ReplayError` when a target cannot take the messages (nothing of that topic
was sent); :class:`ReplayFailed` when some messages were not acknowledged;
:class:`ReplayInterrupted` (a ``KeyboardInterrupt``) after Ctrl-C, once what was sent is
flushed. The last two carry the :class:`ReplaySummary` of what was acknowledged.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from pipeline.errors import PipelineError
from pipeline.kafka.clients import build_admin, build_producer
from pipeline.kafka.interrupts import InterruptWitness
from pipeline.replay.pacing import Pacing, Schedule
from pipeline.replay.recording import MAX_MESSAGE_BYTES, LinePlace, ProducibleMessage
from pipeline.replay.rewrite import rewrite_ids as fresh_ids
from pipeline.replay.routing import BY_KEY, ReplayError, target_partition
from pipeline.settings import KafkaSettings
from pipeline.topics.admin import describe_cluster_topics

__all__ = [
    "PRODUCER_SETTINGS",
    "Pacing",
    "ReplayError",
    "ReplayFailed",
    "ReplayInterrupted",
    "ReplayProducer",
    "ReplayStopped",
    "ReplaySummary",
    "replay_into_kafka",
]

#: Messages between two servings of delivery reports, and between two progress calls.
_STEP = 500
#: How long the final flush waits, beyond librdkafka's own delivery timeout.
_FLUSH_MARGIN_S = 30.0
_DELIVERY_TIMEOUT_MS = 120_000
#: The replay's producer settings, on top of ``producer_config``'s (idempotent, acks=all, murmur2).
PRODUCER_SETTINGS: dict[str, Any] = {
    "linger.ms": 20,
    "delivery.timeout.ms": _DELIVERY_TIMEOUT_MS,
    "compression.type": "lz4",
    # librdkafka's default, named: the check of a recording refuses a larger message first.
    "message.max.bytes": MAX_MESSAGE_BYTES,
    # Only failures come back as delivery reports; successes are counted by subtraction.
    "delivery.report.only.error": True,
}
#: How long to serve delivery reports before retrying a message the full local queue refused:
#: short, as successes are not reported (a poll waits its whole timeout) and the queue drains
#: by thousands a second (measured: at 50 ms, two waits were 6% of a 1.4 s replay).
_FULL_QUEUE_WAIT_S = 0.005
#: How long to wait at most per call while a paced message is not due yet.
_WAIT_SLICE_S = 0.1


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay sent: acknowledged messages, in all and per target topic."""

    sent: int
    per_topic: dict[str, int]
    elapsed_s: float


class ReplayFailed(PipelineError):
    """Some messages were not acknowledged; ``summary`` counts those that were."""

    def __init__(self, summary: ReplaySummary, failed: int, first_error: str) -> None:
        self.summary = summary
        self.failed = failed
        self.first_error = first_error
        super().__init__(
            f"messages not delivered: {failed:,} (the first: {first_error}); "
            f"delivered: {summary.sent:,}"
        )


class ReplayStopped(ReplayError):
    """An error (``error``: a line that is not a message, read as it is sent from a pipe; a
    missing topic) ended a replay part way; ``summary`` counts what was acknowledged before
    it. Its message is the error's."""

    def __init__(self, summary: ReplaySummary, error: PipelineError) -> None:
        self.summary = summary
        self.error = error
        super().__init__(str(error))


class ReplayInterrupted(KeyboardInterrupt):
    """Ctrl-C (or another ``KeyboardInterrupt``: ``interrupt``) during a replay, raised once what
    was sent is flushed; ``summary`` says what was acknowledged."""

    def __init__(self, summary: ReplaySummary, interrupt: KeyboardInterrupt) -> None:
        self.summary = summary
        self.interrupt = interrupt
        super().__init__(f"interrupted; messages delivered: {summary.sent:,}")


class _Deliveries:
    """Counts what was queued per topic, and the failures librdkafka reports."""

    def __init__(self) -> None:
        self.queued: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.first_error: str | None = None

    def report(self, error: KafkaError | None, message: Any) -> None:
        if error is None:
            return
        self.failed[message.topic() or "?"] += 1
        if self.first_error is None:
            # Where it was going and its key: the line to look for in the recording (the
            # report does not know it; the broker refused it after the line was read).
            self.first_error = f"{error.str()}, {_where(message)}"

    def summary(self, began: float) -> ReplaySummary:
        per_topic = {topic: count - self.failed[topic] for topic, count in self.queued.items()}
        return ReplaySummary(
            sent=sum(per_topic.values()), per_topic=per_topic, elapsed_s=time.monotonic() - began
        )


def _where(message: Any) -> str:
    """A message's topic, partition and key, as a failure names them."""
    key = message.key()
    if key is None:
        shown = "no key"
    else:
        text = key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else str(key)
        shown = f"key {text[:60]!r}" + ("..." if len(text) > 60 else "")
    return f"to {message.topic()}[{message.partition()}], {shown}"


class ReplayProducer:
    """The producer of one replay, made ahead (:func:`replay_into_kafka`'s ``prepared``).

    An idempotent producer cannot send before it has its producer id, and librdkafka asks for
    it again only 500 ms after a first try made before any broker connection is up (which is
    the usual case for a new producer): made while the recording is being checked, it is ready
    when the sending starts. Used by one replay only.
    """

    def __init__(self, kafka: KafkaSettings) -> None:
        self.deliveries = _Deliveries()
        self.producer = build_producer(
            kafka, on_delivery=self.deliveries.report, **PRODUCER_SETTINGS
        )


def replay_into_kafka(
    kafka: KafkaSettings,
    messages: Iterable[ProducibleMessage],
    *,
    topic: str | None = None,
    preserve_partitions: bool = False,
    rewrite_ids: bool = False,
    pacing: Pacing | None = None,
    on_progress: Callable[[int], None] | None = None,
    partition_counts: Mapping[str, int] | None = None,
    prepared: ReplayProducer | None = None,
    place: LinePlace | None = None,
) -> ReplaySummary:
    """Produce ``messages`` (in the order given) to their recorded topics, or all to ``topic``.

    With ``pacing=Pacing(speed=...)``, a recording of several partitions keeps its timing when
    given in :class:`~pipeline.replay.pacing.RecordedOrder` (``in_recorded_order(messages)``;
    ``replay_recording`` does it for a file): in file order, a message stamped before the one
    sent last goes at once.

    ``messages`` are :class:`RecordedMessage` objects, or the lines
    :func:`~pipeline.replay.recording.read_recording_for_replay` reads (faster: their text is
    not made bytes first). ``on_progress(n)`` is called with the number of messages queued
    since its last call. ``partition_counts`` are target topics already checked (name to
    partition count): they are not looked up again. ``prepared`` is a producer made ahead
    (:class:`ReplayProducer`), else one is made here. ``place`` is where the reader of
    ``messages`` is (:func:`~pipeline.replay.recording.parse_lines_for_replay`'s): a message
    the client refuses is named by its line, else by its recorded topic, partition and offset.
    See the module docstring for the steps and the errors.
    """
    targets = _Targets(kafka)
    partitions_of: dict[str, int] = dict(partition_counts or {})
    if prepared is None:
        # The first target is looked up before the producer is made: with Kafka away (or the
        # topic missing) the replay fails with that one line, before the producer starts
        # logging its own connection failures.
        messages = iter(messages)
        try:
            first = next(messages, None)
            if first is not None:
                target = first.topic if topic is None else topic
                if target not in partitions_of:
                    partitions_of[target] = targets.partitions(target)
        except KeyboardInterrupt as interrupt:  # nothing sent
            raise ReplayInterrupted(ReplaySummary(0, {}, 0.0), interrupt) from None
        messages = iter(()) if first is None else itertools.chain((first,), messages)
    made = prepared if prepared is not None else ReplayProducer(kafka)
    deliveries = made.deliveries
    producer = made.producer
    schedule = Schedule(pacing)
    paced = schedule.paced
    step = 1 if paced else _STEP
    queued = deliveries.queued
    produce = producer.produce
    unreported = 0
    began = time.monotonic()
    # The loop runs once per message at up to ~100,000 a second: calls are kept out of the
    # common case (no pacing, no new ids, partitions by key) and the usual produce is inline.
    # Each target's partitions (partitions_of) are looked up before its first message.
    try:
        # A Ctrl-C inside the client comes out as the interrupt, not the error it reports.
        with InterruptWitness():
            for message in messages:
                target = message.topic if topic is None else topic
                partitions = partitions_of.get(target)
                if partitions is None:
                    partitions = partitions_of[target] = targets.partitions(target)
                if preserve_partitions:
                    partition = target_partition(message, preserve=True, partitions=partitions)
                elif message.key is None:  # its recorded partition's order kept (routing.py)
                    partition = message.partition % partitions
                else:
                    partition = BY_KEY
                headers, value = message.headers, message.value
                if rewrite_ids:
                    headers, value = fresh_ids(headers or (), value)
                if type(headers) is not list:
                    headers = list(headers or ())
                if paced:
                    _wait_until(producer, began + schedule.due_s(message.timestamp_ms))
                try:
                    # Positional, in confluent-kafka's order (topic, value, key, partition,
                    # callback, on_delivery, timestamp, headers; BY_KEY is its -1, "by the
                    # partitioner", None the producer's own report callback, 0 "now"): any
                    # keyword makes its C parser look up all eight names, a fifth of the call.
                    produce(target, value, message.key, partition, None, None, 0, headers)
                except BufferError:  # the local queue is full: serve reports, then retry
                    producer.poll(_FULL_QUEUE_WAIT_S)
                    _produce(producer, target, message, value, partition, headers, place)
                except KafkaException as error:
                    raise _refused(message, error, place) from None
                queued[target] += 1
                unreported += 1
                if unreported >= step:
                    producer.poll(0)
                    if on_progress is not None:
                        on_progress(unreported)
                    unreported = 0
    except KeyboardInterrupt as interrupt:
        _flush(producer)
        raise ReplayInterrupted(deliveries.summary(began), interrupt) from None
    except PipelineError as error:
        _flush(producer)  # what was queued is delivered or failed before the error ends
        if not queued:
            raise
        raise ReplayStopped(deliveries.summary(began), error) from None
    except BaseException:
        _flush(producer)
        raise
    if unreported and on_progress is not None:
        on_progress(unreported)
    _flush(producer)
    summary = deliveries.summary(began)
    failed = sum(deliveries.failed.values())
    if failed:
        raise ReplayFailed(summary, failed, deliveries.first_error or "unknown")
    return summary


class _Targets:
    """The partition count of each target topic, looked up once, before its first message."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._counts: dict[str, int] = {}

    def partitions(self, topic: str) -> int:
        count = self._counts.get(topic)
        if count is None:
            count = self._counts[topic] = self._look_up(topic)
        return count

    def _look_up(self, topic: str) -> int:
        bootstrap = self._kafka.bootstrap_servers
        found = describe_cluster_topics(build_admin(self._kafka), [topic], bootstrap=bootstrap)
        if topic not in found:
            raise ReplayError(f"topic {topic} does not exist on Kafka at {bootstrap}")
        return found[topic].partitions


def _produce(
    producer: Producer,
    topic: str,
    message: ProducibleMessage,
    value: str | bytes | None,
    partition: int,
    headers: list[tuple[str, str | bytes | None]],
    place: LinePlace | None,
) -> None:
    """Queue one message the careful way: while the local queue is full, serve delivery reports
    and retry; a refusal is a :class:`ReplayError` naming the message."""
    while True:
        try:
            producer.produce(topic, value, message.key, partition, None, None, 0, headers)
            return
        except BufferError:
            producer.poll(_FULL_QUEUE_WAIT_S)
        except KafkaException as error:
            raise _refused(message, error, place) from None


def _refused(
    message: ProducibleMessage, error: KafkaException, place: LinePlace | None
) -> ReplayError:
    """The error of a message the client refused: named by its line (``place``, the reader's),
    else by where it was recorded."""
    why = error.args[0].str()
    if place is not None and place.number:
        return ReplayError(f"{place}: the message was refused: {why}")
    return ReplayError(
        f"the message at {message.topic} partition {message.partition} offset "
        f"{message.offset} was refused: {why}"
    )


def _wait_until(producer: Producer, moment: float) -> None:
    """Serve delivery reports until the monotonic clock reaches ``moment``."""
    while True:
        left = moment - time.monotonic()
        if left <= 0:
            return
        producer.poll(min(left, _WAIT_SLICE_S))


def _flush(producer: Producer) -> None:
    """Wait for every queued message to be acknowledged or failed.

    What is still unacknowledged after librdkafka's delivery timeout (and a margin) is purged,
    which reports it as failed: every message queued is then counted one way or the other.
    """
    if producer.flush(_DELIVERY_TIMEOUT_MS / 1000 + _FLUSH_MARGIN_S):
        producer.purge()
        producer.flush(_FLUSH_MARGIN_S)
