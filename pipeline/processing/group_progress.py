"""How far a consumer group has handled a topic, from Kafka: its committed offsets against the
end offsets sampled over time (see :mod:`pipeline.processing.read_through`).

The committed offsets are the group's, whichever member handled a partition (or none: a
partition left without a member stays behind until one takes it), so the time holds for the
whole group. It trails the truth by the group's commit interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from pipeline.errors import PipelineError
from pipeline.kafka.watermarks import read_watermarks
from pipeline.processing.read_through import ReadThrough

__all__ = ["GroupProgress"]

logger = logging.getLogger("pipeline.processing")

#: How long one of Kafka's answers may take before this round gives up (the next one asks again).
_ASK_TIMEOUT_S = 5.0
#: How often a failure to ask is logged while it lasts.
_WARN_EVERY_S = 60.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class GroupProgress:
    """:class:`~pipeline.processing.read_through.TopicProgress` of consumer group ``group``.

    ``make_consumer``: makes, on the first question, a consumer of the group's id that never
    subscribes (it only asks for the group's committed offsets and the end offsets; it never
    joins the group). ``start``: where
    the group starts on a partition it has committed nothing on (``processing.start``): from
    the beginning, the records there are still to be read; from the end, none before it will.
    Kafka is asked at most every ``every_s`` per topic; when it cannot be asked, the last time
    found stands (it is in the past, so nothing is claimed that was not so).
    """

    def __init__(
        self,
        make_consumer: Callable[[], Consumer],
        *,
        start: Literal["earliest", "latest"] = "earliest",
        every_s: float = 1.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._make_consumer = make_consumer
        self._consumer: Consumer | None = None
        self._closed = False
        self._start = start
        self._every_s = every_s
        self._clock = clock
        self._topics: dict[str, ReadThrough] = {}
        self._asked_at: dict[str, float] = {}
        self._warned_at: float | None = None

    def read_through(self, topic: str) -> datetime | None:
        tracker = self._topics.setdefault(topic, ReadThrough())
        now = time.monotonic()
        if self._closed or now - self._asked_at.get(topic, -self._every_s) < self._every_s:
            return tracker.time
        self._asked_at[topic] = now
        try:
            self._ask(topic, tracker)
        except (KafkaException, PipelineError, RuntimeError) as error:  # Runtime: closed
            if self._warned_at is None or now - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = now
                reason = error.args[0].str() if isinstance(error, KafkaException) else error
                logger.warning("cannot read how far the group has read %s: %s", topic, reason)
        return tracker.time

    def close(self) -> None:
        """Close the consumer; from now on the last time found is given."""
        self._closed = True
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _ask(self, topic: str, tracker: ReadThrough) -> None:
        if self._consumer is None:
            self._consumer = self._make_consumer()
        consumer = self._consumer
        taken_at = self._clock()  # before the end offsets are asked for
        metadata = consumer.list_topics(topic, timeout=_ASK_TIMEOUT_S).topics[topic]
        if metadata.error is not None:
            raise PipelineError(metadata.error.str())
        watermarks = {
            partition: read_watermarks(consumer, topic, partition, timeout_s=_ASK_TIMEOUT_S)
            for partition in sorted(metadata.partitions)
        }
        tracker.sample(taken_at, {partition: high for partition, (_, high) in watermarks.items()})
        committed = consumer.committed(
            [TopicPartition(topic, partition) for partition in watermarks],
            timeout=_ASK_TIMEOUT_S,
        )
        done: dict[int, int] = {}
        for position in committed:
            low, high = watermarks[position.partition]
            if position.error is not None:
                continue  # not known: that partition is not done
            if position.offset == OFFSET_INVALID or position.offset < 0:
                # Nothing committed by the group there yet.
                done[position.partition] = low if self._start == "earliest" else high
            else:  # records below the low watermark are gone: nothing there is to be read
                done[position.partition] = max(position.offset, low)
        tracker.advance(done)
