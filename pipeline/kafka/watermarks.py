"""The low and high watermarks of a partition, waiting out a topic that is not ready yet."""

from __future__ import annotations

import time
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.errors import PipelineError

__all__ = ["NOT_READY", "UNREADABLE", "WatermarkSource", "read_watermarks"]

#: Errors of a topic created a moment ago (no leader elected yet, or its partitions not yet in
#: the client's metadata: "Local: Unknown partition", seen on a busy machine right after the
#: topic was created) or of a broker that is slow to answer: they go away by themselves, so the
#: read is tried again.
NOT_READY = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._TIMED_OUT,
    }
)
#: Errors that say a partition cannot be read (gone, or not allowed): a reader that must reach
#: the end offsets it saw at its start (a recording, ``pipeline consume``) ends on them.
UNREADABLE = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.UNKNOWN_TOPIC_ID,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError._AUTO_OFFSET_RESET,
    }
)
_RETRY_EVERY_S = 0.2


class WatermarkSource(Protocol):
    """What :func:`read_watermarks` uses of ``confluent_kafka.Consumer``."""

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = ..., cached: bool = ...
    ) -> tuple[int, int]: ...


def read_watermarks(
    consumer: WatermarkSource,
    topic: str,
    partition: int,
    *,
    timeout_s: float,
    deadline: float | None = None,
) -> tuple[int, int]:
    """The low and high watermarks (first offset, and one past the last) of one partition.

    Each request waits at most ``timeout_s``. A :data:`NOT_READY` error is retried every 0.2 s
    until ``deadline`` (a :func:`time.monotonic` time; by default ``timeout_s`` from now). Any
    other error, or one still there at the deadline, is a :class:`PipelineError` naming the
    topic, the partition and Kafka's reason.
    """
    if deadline is None:
        deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
        except KafkaException as exception:
            error: KafkaError = exception.args[0]
            if error.code() not in NOT_READY or time.monotonic() > deadline:
                raise PipelineError(
                    f"cannot read the offsets of {topic} partition {partition}: {error.str()}"
                ) from None
            time.sleep(_RETRY_EVERY_S)
            continue
        return int(low), int(high)
