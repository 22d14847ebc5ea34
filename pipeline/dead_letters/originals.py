"""The values of dead letters sent without them, read back from where they came from.

A dead letter too large for its dead-letter topic is sent without its value
(:func:`~pipeline.dead_letters.letter.without_value`), so that its partition goes on; the
original message stays in its topic, at the position the letter names. A redrive reads it from
there: the same bytes, or a clear error when retention or compaction removed it since.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.dead_letters.letter import DeadLetter
from pipeline.dead_letters.redrive import DeadLetterConsumer
from pipeline.errors import PipelineError

__all__ = ["with_original_values"]


def with_original_values(
    consumer: DeadLetterConsumer, letters: Sequence[DeadLetter], *, timeout_s: float = 30.0
) -> list[DeadLetter]:
    """``letters``, each one sent without its value given it back from its original message
    (read with ``consumer``, a :func:`~pipeline.dead_letters.redrive.open_dead_letter_consumer`
    with ``reset_is_error``: an offset before the partition's start is then said
    in one line, not a librdkafka log line about resetting); a :class:`PipelineError` naming the
    first one whose original cannot be read."""
    return [
        letter
        if letter.value_omitted is None
        else _restored(letter, _original(consumer, letter, timeout_s))
        for letter in letters
    ]


def _restored(letter: DeadLetter, original: Any) -> DeadLetter:
    """``letter`` with the value (and, when it left them out too, the headers) of its
    ``original`` message."""
    headers = letter.headers
    if letter.headers_omitted is not None:
        headers = [(name, data or b"") for name, data in original.headers() or []]
    return dataclasses.replace(
        letter,
        value=original.value(),
        headers=headers,
        value_omitted=None,
        headers_omitted=None,
    )


def _original(consumer: DeadLetterConsumer, letter: DeadLetter, timeout_s: float) -> Any:
    where = f"{letter.original_topic}[{letter.original_partition}]@{letter.original_offset}"
    about = (
        f"dead letter {letter.dlq_topic}:{letter.position} was sent without its value "
        f"({letter.value_omitted:,} bytes, too large for its topic), and its original at {where}"
    )
    missing = _missing_partition(consumer, letter, timeout_s)
    if missing is not None:  # said at once: a read of it would wait out the whole timeout
        raise PipelineError(f"{about} cannot be read: {missing}; discard the letter")
    consumer.assign(
        [TopicPartition(letter.original_topic, letter.original_partition, letter.original_offset)]
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for message in consumer.consume(1, timeout=min(1.0, timeout_s)):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    raise PipelineError(f"{about} is not there any more; discard the letter")
                if error.code() == KafkaError._AUTO_OFFSET_RESET:  # before the partition's start
                    low, _high = consumer.get_watermark_offsets(
                        TopicPartition(letter.original_topic, letter.original_partition),
                        timeout=timeout_s,
                    )
                    raise PipelineError(
                        f"{about} is not there any more (retention, or a deletion of records, "
                        f"removed it; the partition holds offsets from {low}): discard the letter"
                    )
                raise PipelineError(f"{about} cannot be read: {error.str()}")
            if message.offset() != letter.original_offset:
                # Reset to the oldest kept (retention), or past a compacted-away offset.
                raise PipelineError(
                    f"{about} is not there any more (retention or compaction removed it; the "
                    f"partition holds offsets from {message.offset()}): discard the letter"
                )
            value: bytes | None = message.value()
            if value is None or len(value) != letter.value_omitted:
                raise PipelineError(f"{about} is not the message it was (its size differs)")
            return message
    raise PipelineError(f"{about} could not be read within {timeout_s:g} s")


def _missing_partition(
    consumer: DeadLetterConsumer, letter: DeadLetter, timeout_s: float
) -> str | None:
    """Why the letter's original partition is not there (its topic deleted, or fewer
    partitions now), or ``None`` when it is (or the metadata cannot say)."""
    try:
        metadata = consumer.list_topics(letter.original_topic, timeout=timeout_s)
    except KafkaException:
        return None  # the read that follows says what is wrong
    topic = metadata.topics.get(letter.original_topic)
    if topic is None or (
        topic.error is not None
        and topic.error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)
    ):
        return f"its topic {letter.original_topic} does not exist any more"
    if letter.original_partition not in topic.partitions:
        return f"{letter.original_topic} has no partition {letter.original_partition} any more"
    return None
