"""Recording topics: every partition read from a start to a stop, as :class:`RecordedMessage`.

:func:`record_topics` is a generator; nothing is read before the first message is asked for, and
the consumer is closed when the generator ends or is closed. In order:

1. find every partition of the topics (a topic that does not exist is a :class:`RecordingError`);
2. read their watermarks, and the starting offsets the :data:`~pipeline.replay.bounds.Start`
   asks for (a group's committed offsets are only read: the group is not joined, nothing is
   committed);
3. assign the partitions at those offsets (no consumer group) and read, keeping what
   :class:`~pipeline.replay.bounds.RecordingBounds` keeps, until it says the recording is
   complete.

Only committed messages are read (``read_committed``). Messages of one partition come in
offset order; partitions are interleaved as they are fetched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, cast

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from pipeline.envelope.consumed_headers import HeaderNameError, read_headers
from pipeline.errors import PipelineError
from pipeline.ids import new_event_id
from pipeline.kafka.clients import build_consumer
from pipeline.kafka.watermarks import UNREADABLE, read_watermarks
from pipeline.replay.bounds import FromGroup, FromTime, Partition, RecordingBounds, Start, Stop
from pipeline.replay.recording import RecordedMessage, RecordingError, tstype_of
from pipeline.settings import KafkaSettings

__all__ = ["record_topics"]

_log = logging.getLogger(__name__)

_BATCH = 1_000
_POLL_S = 0.5
_TIMEOUT_S = 15.0
#: How often the wall clock is compared with ``Stop.until_ms``.
_CLOCK_CHECK_S = 0.5


Marks = dict[Partition, tuple[int, int]]


def record_topics(
    kafka: KafkaSettings,
    topics: Sequence[str],
    *,
    start: Start = "end",
    stop: Stop | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Generator[RecordedMessage, None, None]:
    """The messages of ``topics`` from ``start`` until ``stop`` (by default, until closed).

    ``on_progress(n)`` is called after each poll with the number of messages it kept (0 when
    nothing came).
    Errors: :class:`RecordingError` for a topic that does not exist; :class:`PipelineError`
    when Kafka cannot be reached or a partition can no longer be read.
    """
    if not topics:
        raise RecordingError("no topic to record")
    stop = stop or Stop()
    consumer = build_consumer(
        kafka, f"pipeline-record-{new_event_id()}", **{"enable.partition.eof": True}
    )
    try:
        partitions = _partitions(consumer, list(dict.fromkeys(topics)), kafka.bootstrap_servers)
        marks = {
            (topic, partition): read_watermarks(consumer, topic, partition, timeout_s=_TIMEOUT_S)
            for topic, partition in partitions
        }
        starts = _starts(kafka, consumer, start, marks)
        ends = {tp: high for tp, (_, high) in marks.items()} if stop.at_end else None
        bounds = RecordingBounds(starts, stop, ends=ends)
        open_partitions = [tp for tp in starts if tp not in bounds.done]
        if bounds.finished:
            return
        consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in open_partitions])
        yield from _read(consumer, bounds, on_progress)
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topics: list[str], bootstrap: str) -> list[Partition]:
    found: list[Partition] = []
    for topic in topics:
        try:
            metadata = consumer.list_topics(topic, timeout=_TIMEOUT_S).topics.get(topic)
        except KafkaException as error:
            raise PipelineError(
                f"Kafka at {bootstrap} does not answer: {error.args[0].str()}"
            ) from None
        if metadata is None or metadata.error is not None or not metadata.partitions:
            why = "no such topic" if metadata is None or metadata.error is None else None
            raise RecordingError(
                f"cannot record {topic}: {why or metadata.error.str()} (Kafka at {bootstrap})"
            )
        found.extend((topic, partition) for partition in sorted(metadata.partitions))
    return found


def _starts(
    kafka: KafkaSettings, consumer: Consumer, start: Start, marks: Marks
) -> dict[Partition, int]:
    """The offset each partition's reading starts at, for ``start``."""
    if start == "beginning":
        return {tp: low for tp, (low, _) in marks.items()}
    if start == "end":
        return {tp: high for tp, (_, high) in marks.items()}
    if isinstance(start, FromTime):
        asked = [TopicPartition(t, p, start.timestamp_ms) for t, p in marks]
        found = _checked(consumer.offsets_for_times(asked, timeout=_TIMEOUT_S), "find offsets")
        # -1: no message at or after that time yet, so from the end.
        return {
            (tp.topic, tp.partition): tp.offset
            if tp.offset >= 0
            else marks[(tp.topic, tp.partition)][1]
            for tp in found
        }
    assert isinstance(start, FromGroup)
    group_reader = build_consumer(kafka, start.group)
    try:
        asked = [TopicPartition(t, p) for t, p in marks]
        found = _checked(group_reader.committed(asked, timeout=_TIMEOUT_S), "read the offsets")
    finally:
        group_reader.close()
    starts = {}
    for tp in found:
        low, high = marks[(tp.topic, tp.partition)]
        # Nothing committed (or committed before what retention kept): from the beginning.
        starts[(tp.topic, tp.partition)] = min(max(tp.offset, low), high)
    uncommitted = [tp for tp in found if tp.offset < 0]
    # A mistyped group name would record whole topics without a word.
    if uncommitted and len(uncommitted) == len(found):
        _log.warning(
            "group %s has committed no offset on %s: recording from the beginning (is that "
            "the group's name?)",
            start.group,
            ", ".join(sorted({tp.topic for tp in found})),
        )
    elif uncommitted:
        _log.warning(
            "group %s has committed no offset on %d of the %d partitions: those are recorded "
            "from the beginning",
            start.group,
            len(uncommitted),
            len(found),
        )
    return starts


def _checked(found: list[TopicPartition], doing: str) -> list[TopicPartition]:
    for tp in found:
        if tp.error is not None:
            raise PipelineError(
                f"cannot {doing} of {tp.topic} partition {tp.partition}: {tp.error.str()}"
            )
    return found


def _read(
    consumer: Consumer, bounds: RecordingBounds, on_progress: Callable[[int], None] | None
) -> Iterator[RecordedMessage]:
    warned: set[int] = set()
    paused: set[Partition] = set(bounds.done)
    clock_checked = time.monotonic()
    while not bounds.finished:
        # Typed loosely: a consumed message has its topic, partition and offset.
        batch: list[Any] = consumer.consume(num_messages=_BATCH, timeout=_POLL_S)
        kept = 0
        for message in batch:
            if message.error() is not None:
                _on_error(message, bounds, warned)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            kind, stamp = message.timestamp()
            timestamp_ms = None if kind == TIMESTAMP_NOT_AVAILABLE else stamp
            if not bounds.keep((topic, partition), offset, timestamp_ms):
                if bounds.full:
                    break
                continue
            kept += 1
            key, value = message.key(), message.value()  # before the headers: see _headers
            yield RecordedMessage(
                topic,
                partition,
                offset,
                key,
                value,
                _headers(message, (topic, partition, offset), bounds),
                timestamp_ms,
                tstype_of(kind),
            )
        if on_progress is not None:  # 0 too: a rate shown keeps falling while nothing comes
            on_progress(kept)
        now = time.monotonic()
        if now - clock_checked >= _CLOCK_CHECK_S:
            clock_checked = now
            if bounds.clock_passed_until(time.time_ns() // 1_000_000):
                bounds.close_at(_ends(consumer, bounds))
        newly_done = bounds.done - paused
        if newly_done and not bounds.finished:
            consumer.pause([TopicPartition(t, p) for t, p in newly_done])
            paused |= newly_done


def _headers(
    message: Any, where: tuple[str, int, int], bounds: RecordingBounds
) -> tuple[tuple[str, bytes | None], ...]:
    """The headers of a consumed message; a :class:`RecordingError` when a header name is not
    UTF-8, which confluent-kafka cannot read (:mod:`pipeline.envelope.consumed_headers`: the
    message is not touched after that). So the message cannot be recorded as it is, and the
    recording stops at it rather than skip or change it."""
    topic, partition, offset = where
    try:
        headers = read_headers(message) or ()
        return cast(tuple[tuple[str, bytes | None], ...], tuple(headers))  # a consumed list
    except HeaderNameError as error:
        raise RecordingError(
            f"cannot record {topic} partition {partition} offset {offset}: {error} (messages "
            f"recorded before it: {bounds.kept - 1:,})"
        ) from None


def _ends(consumer: Consumer, bounds: RecordingBounds) -> dict[Partition, int]:
    return {
        (topic, partition): read_watermarks(consumer, topic, partition, timeout_s=_TIMEOUT_S)[1]
        for topic, partition in bounds.starts
    }


def _on_error(message: Any, bounds: RecordingBounds, warned: set[int]) -> None:
    """Apply the error policy: the end of a partition is noted; an error that says a partition
    cannot be read, or a fatal one, ends the recording; anything else is logged once."""
    error: KafkaError = message.error()
    code = error.code()
    topic, partition = message.topic(), message.partition()
    if code == KafkaError._PARTITION_EOF:
        bounds.reached_end((topic, partition), message.offset())
        return
    if error.fatal() or code in UNREADABLE:
        where = topic or "the topics"
        if partition is not None and partition >= 0:
            where += f" partition {partition}"
        raise PipelineError(
            f"cannot read {where}: {error.str()} (messages recorded before it: {bounds.kept:,})"
        )
    if code not in warned:  # librdkafka recovers from these by itself
        warned.add(code)
        _log.warning("while recording: %s", error.str())
