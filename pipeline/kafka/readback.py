"""Reading back what was just produced: from given offsets, until the expected events arrived."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from pipeline.envelope import EnvelopeError, Event, decode_message
from pipeline.kafka.watermarks import read_watermarks


@dataclass
class ReadbackReport:
    events: list[Event] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    per_partition: Counter[tuple[str, int]] = field(default_factory=Counter)
    timed_out: bool = False


def end_offsets(consumer: Consumer, topic: str, timeout_s: float = 30.0) -> list[TopicPartition]:
    """The current end (high watermark) of every partition of ``topic``.

    A topic created a moment ago may not have its leaders elected yet; those errors are
    retried until ``timeout_s`` (see :func:`pipeline.kafka.watermarks.read_watermarks`), then,
    like any other, raise :class:`~pipeline.errors.PipelineError`.
    """
    deadline = time.monotonic() + timeout_s
    metadata = consumer.list_topics(topic, timeout=timeout_s)
    positions = []
    for partition in sorted(metadata.topics[topic].partitions):
        _, high = read_watermarks(
            consumer, topic, partition, timeout_s=timeout_s, deadline=deadline
        )
        positions.append(TopicPartition(topic, partition, high))
    return positions


def read_from(
    consumer: Consumer,
    start: list[TopicPartition],
    wanted: set[str],
    timeout_s: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
) -> ReadbackReport:
    """Read from ``start`` until every event id in ``wanted`` arrived or ``timeout_s`` passed.

    Other producers may write to the same topics meanwhile; their messages are read and skipped.
    """
    report = ReadbackReport()
    consumer.assign(start)
    deadline = time.monotonic() + timeout_s
    missing = set(wanted)
    while missing:
        if time.monotonic() > deadline:
            report.timed_out = True
            break
        for message in consumer.consume(num_messages=500, timeout=0.5):
            if message.error() is not None:
                continue
            try:
                event = decode_message(message)
            except EnvelopeError as error:
                report.undecodable.append(f"{message.partition()}@{message.offset()}: {error}")
                continue
            if event.id not in wanted:
                continue  # someone else's traffic on the same topic
            report.events.append(event)
            report.per_partition[(message.topic() or "", message.partition() or 0)] += 1
            missing.discard(event.id)
            if on_progress is not None:
                on_progress(1)
    return report
