"""Reading a dead-letter topic back, choosing what to redrive, and redriving (or discarding) it.

The format (headers, markers, the messages to send) is :mod:`pipeline.dead_letters.letter`, the
choice of what to redrive :mod:`pipeline.dead_letters.selection` (pure); this module is their I/O
edge:

1. :func:`read_dead_letters`: every partition of ``<topic>.dlq`` from its beginning up to the
   end offsets taken at the start, ``read_committed`` (so a redrive transaction that was aborted
   is invisible, and the end offsets are the last stable offsets), by ``assign``: no consumer
   group, nothing committed (:func:`read_dead_letter_topic`: with the other messages too);
2. :func:`pipeline.dead_letters.letter.pending_dead_letters`: the dead letters without a marker;
3. :func:`~pipeline.dead_letters.selection.select_for_redrive` (pure): the filtered dead
   letters plus, for per-key order, every later pending dead letter of the same key, original
   topic and consumer group;
4. :func:`redrive`: in Kafka transactions of ``batch_size`` dead letters, each letter goes back
   to its original topic (:func:`~pipeline.dead_letters.letter.redrive_message`: for its own
   consumer group only) together with its marker on the dead-letter topic
   (:func:`~pipeline.dead_letters.letter.redriven_marker`); both commit or neither does;
5. :func:`discard`: for a dead letter that can never succeed, only a marker that discards it,
   in the same transactions.

At most once: the transactional id is the dead-letter topic's (:func:`redrive_transactional_id`),
and the caller initialises the producer's transactions *before* step 1. That fences any older
redrive of the same dead-letter topic (its open transaction is aborted, it can commit nothing
more), so every marker it did commit is read in step 1 and its letters are not sent again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.dead_letters.letter import (
    NO_REASON,
    DeadLetter,
    Marker,
    Stray,
    discarded_marker,
    read_dead_letter,
    redrive_message,
    redriven_marker,
)
from pipeline.dead_letters.selection import with_last_of_key
from pipeline.envelope import KafkaMessage
from pipeline.envelope.consumed_headers import HeaderNameError, read_headers
from pipeline.errors import PipelineError
from pipeline.ids import new_event_id
from pipeline.kafka.clients import build_consumer
from pipeline.kafka.producer import (
    Delivery,
    EventProducer,
    TransactionAborted,
    build_event_producer,
)
from pipeline.kafka.watermarks import WatermarkSource, read_watermarks
from pipeline.settings import KafkaSettings, ProducerSettings

__all__ = [
    "DeadLetterConsumer",
    "DiscardResult",
    "RedriveResult",
    "discard",
    "open_dead_letter_consumer",
    "read_dead_letter_topic",
    "read_dead_letters",
    "redrive",
    "redrive_producer",
    "redrive_transactional_id",
]

#: Dead letters per redrive transaction.
BATCH_SIZE = 500
#: Attempts of one batch whose transaction was aborted (nothing of it visible) before giving up.
ATTEMPTS = 3

_BATCH = 500
_POLL_S = 0.5

#: Errors that say the dead-letter topic or a partition of it cannot be read.
_UNREADABLE = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
)
_FENCED = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    }
)

# librdkafka's own log lines (a fenced producer logs its fatal error) would bury the one-line
# report the command prints.
_client_log = logging.getLogger("pipeline.kafka.redrive")
_client_log.addHandler(logging.NullHandler())
_client_log.propagate = False


# --- reading ----------------------------------------------------------------------------------


class DeadLetterConsumer(WatermarkSource, Protocol):
    """What :func:`read_dead_letters` uses of ``confluent_kafka.Consumer``."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...


@contextmanager
def open_dead_letter_consumer(
    kafka: KafkaSettings, *, reset_is_error: bool = False
) -> Iterator[DeadLetterConsumer]:
    """A consumer for :func:`read_dead_letters`, closed after the block.

    ``read_committed`` (from :func:`pipeline.kafka.clients.consumer_config`), partition-end events
    on, and a group id of its own that is never joined or committed (partitions are assigned).
    With ``reset_is_error``, an assigned offset the partition no longer holds is an error event
    (``_AUTO_OFFSET_RESET``) instead of a reset to its start.
    """
    overrides: dict[str, object] = {"enable.partition.eof": True}
    if reset_is_error:
        overrides["auto.offset.reset"] = "error"
    consumer = build_consumer(kafka, f"pipeline-dlq-reader-{new_event_id()}", **overrides)
    try:
        yield consumer
    finally:
        consumer.close()


def _partitions(consumer: DeadLetterConsumer, topic: str, timeout_s: float) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as error:
        raise PipelineError(f"cannot read the metadata of {topic}: {error.args[0].str()}") from None
    found = metadata.topics.get(topic)
    if found is None or (found.error is not None and found.error.code() in _UNREADABLE):
        raise PipelineError(f"dead-letter topic {topic} does not exist")
    return sorted(found.partitions)


def read_dead_letters(
    consumer: DeadLetterConsumer, dlq_topic: str, *, timeout_s: float = 60.0
) -> list[DeadLetter | Marker | None]:
    """Every message of ``dlq_topic`` up to the end offsets seen at the start, read back.

    Each item is what :func:`pipeline.dead_letters.letter.read_dead_letter` makes of one message: a
    :class:`DeadLetter`, a :class:`Marker`, or ``None`` for anything else. Items
    are in partition order, then offset order. The consumer must be ``read_committed`` with
    ``enable.partition.eof`` (:func:`open_dead_letter_consumer`); it is assigned the partitions
    and commits nothing. A partition that cannot be read to its end within ``timeout_s`` (an
    open transaction that never ends, say) is a :class:`PipelineError`.
    """
    read = read_dead_letter_topic(consumer, dlq_topic, timeout_s=timeout_s)
    return [None if isinstance(item, Stray) else item for item in read]


def read_dead_letter_topic(
    consumer: DeadLetterConsumer, dlq_topic: str, *, timeout_s: float = 60.0
) -> list[DeadLetter | Marker | Stray]:
    """:func:`read_dead_letters` with a :class:`Stray` (where, and why) for each message that is
    neither a dead letter nor a marker, for a reader to say so: a redrive never sends one."""
    deadline = time.monotonic() + timeout_s
    stops: dict[int, int] = {}
    starts: list[TopicPartition] = []
    for partition in _partitions(consumer, dlq_topic, timeout_s):
        low, high = read_watermarks(
            consumer, dlq_topic, partition, timeout_s=timeout_s, deadline=deadline
        )
        stops[partition] = high
        if low < high:
            starts.append(TopicPartition(dlq_topic, partition, low))
    waiting = {tp.partition for tp in starts}
    read: dict[int, list[DeadLetter | Marker | Stray]] = {partition: [] for partition in stops}
    if not waiting:
        return []
    consumer.assign(starts)
    while waiting:
        if time.monotonic() > deadline:
            numbers = ", ".join(str(partition) for partition in sorted(waiting))
            which = (
                f"partition {numbers} was" if len(waiting) == 1 else f"partitions {numbers} were"
            )
            raise PipelineError(
                f"{dlq_topic} {which} not read to the end within "
                f"{timeout_s:.0f} s (a transaction still open?)"
            )
        for message in consumer.consume(num_messages=_BATCH, timeout=_POLL_S):
            partition, offset = message.partition(), message.offset()
            error = message.error()
            if error is not None:
                _reading_error(dlq_topic, error, partition, offset, stops, waiting)
                continue
            if partition not in waiting:
                continue
            if offset >= stops[partition]:
                waiting.discard(partition)
                continue
            read[partition].append(_read(dlq_topic, partition, offset, message))
            if offset + 1 >= stops[partition]:
                waiting.discard(partition)
        # A transaction's commit marker may be the last offset: it is never delivered, but the
        # position moves past it.
        if waiting:
            for position in consumer.position([TopicPartition(dlq_topic, p) for p in waiting]):
                if position.offset >= stops[position.partition]:
                    waiting.discard(position.partition)
    return [item for partition in sorted(read) for item in read[partition]]


def _read(dlq_topic: str, partition: int, offset: int, message: Any) -> DeadLetter | Marker | Stray:
    """:func:`read_dead_letter` of one consumed message; a :class:`Stray` (written there by
    someone else) for one that is neither letter nor marker, or has a header name that is not
    UTF-8, which confluent-kafka cannot read (:mod:`pipeline.envelope.consumed_headers`): a dead
    letter never has one (see :mod:`pipeline.dead_letters.letter`). Key and value are read
    first, as the message must not be touched after that failure."""
    key, value = message.key(), message.value()
    try:
        headers = read_headers(message)
    except HeaderNameError:
        return Stray(dlq_topic, partition, offset, "a header name that is not UTF-8")
    if isinstance(headers, Mapping):  # confluent-kafka gives a list; the envelope takes both
        headers = list(headers.items())
    item = read_dead_letter(dlq_topic, partition, offset, key, value, headers)
    return Stray(dlq_topic, partition, offset, NO_REASON) if item is None else item


def _reading_error(
    topic: str,
    error: KafkaError,
    partition: int | None,
    offset: int | None,
    stops: dict[int, int],
    waiting: set[int],
) -> None:
    code = error.code()
    if code == KafkaError._PARTITION_EOF:
        if partition is not None and offset is not None and offset >= stops.get(partition, 0):
            waiting.discard(partition)
        return
    if error.fatal() or code in _UNREADABLE:
        raise PipelineError(f"cannot read {topic} to the end: {error.str()}")
    # Anything else (a lost connection, a leader moving) librdkafka recovers from by itself.


# --- redriving --------------------------------------------------------------------------------


def redrive_transactional_id(dlq_topic: str) -> str:
    """The transactional id of every redrive of ``dlq_topic``: a newer redrive fences an older."""
    return f"pipeline-redrive-{dlq_topic}"


def redrive_producer(
    kafka: KafkaSettings, producer: ProducerSettings, dlq_topic: str
) -> EventProducer:
    """The transactional producer for redriving ``dlq_topic`` (call ``init_transactions()``
    before reading the dead letters: see the module docstring)."""
    return build_event_producer(
        kafka,
        producer,
        transactional_id=redrive_transactional_id(dlq_topic),
        logger=_client_log,
    )


@dataclass(kw_only=True)
class _TransactionalRun:
    """What a run of transactions did, whatever they carried."""

    transactions: int = 0
    #: Transactions aborted (nothing of them visible) and tried again.
    retried: int = 0
    #: A newer redrive or discard of the same dead-letter topic took over; this one could
    #: commit no more.
    fenced: bool = False
    error: str | None = None


@dataclass(kw_only=True)
class RedriveResult(_TransactionalRun):
    """What one redrive did. ``redriven`` are committed (sent and marked); the others not."""

    redrive_id: str
    redriven: list[DeadLetter] = field(default_factory=list)
    not_redriven: list[DeadLetter] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.not_redriven and self.error is None


@dataclass(kw_only=True)
class DiscardResult(_TransactionalRun):
    """What one discard did. ``discarded`` are committed (marked); the others not."""

    discarded: list[DeadLetter] = field(default_factory=list)
    not_discarded: list[DeadLetter] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.not_discarded and self.error is None


def _is_fenced(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KafkaException) and current.args:
            kafka_error = current.args[0]
            if isinstance(kafka_error, KafkaError) and kafka_error.code() in _FENCED:
                return True
        current = current.__cause__ or current.__context__
    return "fenced" in str(error).lower()


def redrive(
    producer: EventProducer,
    letters: Sequence[DeadLetter],
    *,
    redrive_id: str,
    on_progress: Callable[[int], None] | None = None,
    on_interrupted: Callable[[int, bool | None], None] | None = None,
    batch_size: int = BATCH_SIZE,
    attempts: int = ATTEMPTS,
    timeout_s: float = 60.0,
) -> RedriveResult:
    """Send ``letters`` back to their original topics, in order, each with its marker.

    ``producer`` is transactional (:func:`redrive_producer`) with its transactions initialised.
    Per batch of ``batch_size``: begin; per letter, the redrive message to
    ``letter.original_topic`` (key, value and original headers, plus ``pipeline.redrive.id``,
    ``.last``, ``.of`` and ``.group``: :func:`~pipeline.dead_letters.letter.redrive_message`;
    ``.last`` per original topic, key and consumer group) and its marker to
    ``letter.dlq_topic``; commit. An aborted transaction (nothing of it visible) is tried again
    up to ``attempts`` times. Any other failure, or being fenced by a newer redrive, stops the
    run: later batches are not sent, so per-key order holds, and a re-run sends exactly what is
    still pending. ``on_progress`` gets the number of letters of each committed batch.

    An interrupt (Ctrl-C, SIGTERM) is raised as it comes: during a batch's sends, its
    transaction is aborted; once its commit has begun, the commit is finished first and
    ``on_interrupted(letters, committed)`` is told the batch's size and whether it was
    committed (``on_progress`` too, then), or ``None`` when that could not be learnt: a re-run
    still sends exactly what is pending.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    result = RedriveResult(redrive_id=redrive_id)
    plan = with_last_of_key(letters)
    for start in range(0, len(plan), batch_size):
        batch = plan[start : start + batch_size]
        messages = [
            message
            for letter, last in batch
            for message in (
                (
                    letter.original_topic,
                    redrive_message(letter, redrive_id=redrive_id, last_of_key=last),
                ),
                (letter.dlq_topic, redriven_marker(letter)),
            )
        ]
        with _interrupts_told(len(batch), on_progress, on_interrupted) as state:
            error = _commit_batch(producer, messages, attempts, timeout_s, result, state)
            if error is not None:
                result.error = error
                result.not_redriven = [letter for letter, _ in plan[start:]]
                return result
            result.transactions += 1
            result.redriven.extend(letter for letter, _ in batch)
            if on_progress is not None:
                on_progress(len(batch))
            state.counted = True
    return result


def discard(
    producer: EventProducer,
    letters: Sequence[DeadLetter],
    *,
    note: str,
    on_progress: Callable[[int], None] | None = None,
    on_interrupted: Callable[[int, bool | None], None] | None = None,
    batch_size: int = BATCH_SIZE,
    attempts: int = ATTEMPTS,
    timeout_s: float = 60.0,
) -> DiscardResult:
    """Discard ``letters``: a marker for each on its dead-letter topic
    (:func:`~pipeline.dead_letters.letter.discarded_marker`, with ``note``), nothing sent
    anywhere else; the letters are no longer pending and are never redriven.

    The same producer, transactions, retries, fencing and interrupts as :func:`redrive` (one
    transactional id per dead-letter topic: a discard and a redrive of one topic never run at
    once).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    result = DiscardResult()
    for start in range(0, len(letters), batch_size):
        batch = letters[start : start + batch_size]
        messages = [(letter.dlq_topic, discarded_marker(letter, note)) for letter in batch]
        with _interrupts_told(len(batch), on_progress, on_interrupted) as state:
            error = _commit_batch(producer, messages, attempts, timeout_s, result, state)
            if error is not None:
                result.error = error
                result.not_discarded = list(letters[start:])
                return result
            result.transactions += 1
            result.discarded.extend(batch)
            if on_progress is not None:
                on_progress(len(batch))
            state.counted = True
    return result


@dataclass
class _Batch:
    """Where one batch's transaction is, for an interrupt to say what became of it. A signal's
    handler raises between any two bytecodes: each flag is set before the step it names."""

    #: Every message is sent: the commit begins, if it has not yet; cleared when it failed.
    committing: bool = False
    #: What the producer told of a commit an interrupt cut into: committed, or ``None``.
    told: list[bool | None] = field(default_factory=list)
    #: Counted: ``on_progress`` was told.
    counted: bool = False


@contextmanager
def _interrupts_told(
    letters: int,
    on_progress: Callable[[int], None] | None,
    on_interrupted: Callable[[int, bool | None], None] | None,
) -> Iterator[_Batch]:
    """Around one batch: an interrupt that leaves the block once the batch's commit has
    begun tells the callers what became of it (a committed batch counts as progress: a re-run
    does not send it again). Cut into the commit call, the producer finished the commit and
    said; anywhere else after it began (just after it, say), that is not known."""
    state = _Batch()
    try:
        yield state
    except BaseException:
        if state.told:
            committed = state.told[-1]
        elif state.committing and not state.counted:
            committed = None
        else:  # during the sends (aborted), or after the batch was counted
            raise
        if committed and on_progress is not None:
            on_progress(letters)
        if on_interrupted is not None:
            on_interrupted(letters, committed)
        raise


def _commit_batch(
    producer: EventProducer,
    messages: Sequence[tuple[str, KafkaMessage]],
    attempts: int,
    timeout_s: float,
    result: _TransactionalRun,
    state: _Batch,
) -> str | None:
    """Commit ``messages`` (topic, message) in one transaction; ``None`` when done, else why it
    could not be (fenced: flagged). ``state`` follows the transaction (:class:`_Batch`)."""
    for attempt in range(1, attempts + 1):
        failures: list[Delivery] = []
        delivered = partial(_keep_failure, failures)
        state.committing = False
        try:
            with producer.transaction(timeout_s, on_interrupted_commit=state.told.append):
                for topic, message in messages:
                    producer.send(topic, message, delivered)
                state.committing = True
        except TransactionAborted as error:
            state.committing = False
            why = _with_first_failure(str(error), failures)
            if _is_fenced(error):
                result.fenced = True
                return why
            if attempt < attempts:
                result.retried += 1
                continue
            return f"{why} ({attempts} attempts)"
        except (PipelineError, KafkaException) as error:
            state.committing = False
            text = error.args[0].str() if isinstance(error, KafkaException) else str(error)
            if _is_fenced(error):
                result.fenced = True
            return _with_first_failure(text, failures)
        return None
    return None  # pragma: no cover - the loop always returns


def _keep_failure(failures: list[Delivery], delivery: Delivery) -> None:
    if not delivery.ok:
        failures.append(delivery)


def _with_first_failure(why: str, failures: Sequence[Delivery]) -> str:
    if not failures:
        return why
    first = failures[0]
    return f"{why}; first failed delivery: {first.topic}: {first.error}"
