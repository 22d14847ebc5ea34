"""How far a consumer group has handled a topic, from Kafka: its committed offsets against the
end offsets sampled over time (see :mod:`pipeline.processing.read_through`).

The committed offsets are the group's, whichever member handled a partition (or none: a
partition left without a member stays behind until one takes it), so the time holds for the
whole group. It trails the truth by the group's commit interval and the refresh interval.

The end offsets are a ``read_committed`` reader's (the last stable offset): a record of a
transaction still open is not there yet. A group's committed offset stops below the end when
the end holds only what such a reader never gets (a transaction's marker, say after a
transactional ``pipeline dlq redrive``, or aborted records): nothing would move it until the
next record. A partition whose committed offset stays put below its end is therefore read
from there once; when nothing comes before the end, it counts as read to the end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.errors import PipelineError
from pipeline.kafka.watermarks import read_watermarks
from pipeline.processing.read_through import ReadThrough

__all__ = ["GroupProgress"]

logger = logging.getLogger("pipeline.processing")

#: How long one of Kafka's answers may take before this round gives up (the next one asks again).
_ASK_TIMEOUT_S = 5.0
#: How often a failure to ask is logged while it lasts.
_WARN_EVERY_S = 60.0

#: What the consumer :class:`GroupProgress` needs beyond the group id: end offsets and reads as
#: the group's own members see them, and an end-of-partition event for the look past a commit.
CONSUMER_CONFIG = {"isolation.level": "read_committed", "enable.partition.eof": True}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class GroupProgress:
    """:class:`~pipeline.processing.read_through.TopicProgress` of one consumer group.

    ``make_consumer``: makes, on the first refresh, a consumer of the group's id that never
    subscribes (it asks for the group's committed offsets and the end offsets, and reads past a
    commit that stays put; it never joins the group), configured with :data:`CONSUMER_CONFIG`.
    ``start``: where the group starts on a partition it has committed nothing on
    (``processing.start``): from the beginning, the records there are still to be read; from
    the end, those before the end seen first are never read.

    :meth:`read_through` answers from what the last :meth:`refresh` found, so that it never
    waits for Kafka; :meth:`refresh` (the runtime calls it every second, in a worker thread)
    asks Kafka about every topic asked about so far. When Kafka cannot be asked, the last time
    found stands: it is in the past, so nothing is claimed that was not so.
    """

    def __init__(
        self,
        make_consumer: Callable[[], Consumer],
        *,
        start: Literal["earliest", "latest"] = "earliest",
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._make_consumer = make_consumer
        self._start = start
        self._clock = clock
        self._consumer: Consumer | None = None
        self._closed = False
        # One refresh at a time, and close() not in the middle of one.
        self._lock = threading.Lock()
        self._topics: dict[str, ReadThrough] = {}
        # start=latest: the end of a partition the group has committed nothing on, when first
        # seen (what the group skipped is at most that).
        self._first_ends: dict[tuple[str, int], int] = {}
        # The committed offset of each partition at the last refresh, and what the look past a
        # commit that stayed put found: (committed, end) -> nothing readable in between.
        self._last_committed: dict[tuple[str, int], int] = {}
        self._looked: dict[tuple[str, int], tuple[int, int, bool]] = {}
        self._warned_at: float | None = None

    def read_through(self, topic: str) -> datetime | None:
        """What the last refresh found for ``topic`` (asked about from now on)."""
        tracker = self._topics.get(topic)
        if tracker is None:
            tracker = self._topics.setdefault(topic, ReadThrough())
        return tracker.time

    def refresh(self) -> None:
        """Sample the end offsets of every topic asked about and advance by the committed
        offsets. Blocks while Kafka answers (up to a few seconds each when it does not)."""
        with self._lock:
            for topic, tracker in list(self._topics.items()):
                if self._closed:
                    break
                try:
                    self._ask(topic, tracker)
                except (KafkaException, PipelineError) as error:
                    now = time.monotonic()
                    if self._warned_at is None or now - self._warned_at >= _WARN_EVERY_S:
                        self._warned_at = now
                        reason = error.args[0].str() if isinstance(error, KafkaException) else error
                        logger.warning(
                            "cannot read how far the group has read %s: %s", topic, reason
                        )
        if self._closed:  # close() came meanwhile and left the consumer to this refresh
            self.close()

    def close(self) -> None:
        """Close the consumer; from now on the last time found is given. A refresh under way
        closes it when it ends (Kafka may be slow to answer it): this never waits for one."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._close_consumer()
            finally:
                self._lock.release()

    def _close_consumer(self) -> None:
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
            if position.error is not None:
                continue  # not known: that partition is not done
            low, high = watermarks[position.partition]
            done[position.partition] = self._done(consumer, topic, position, low, high)
        tracker.advance(done)

    def _done(
        self, consumer: Consumer, topic: str, position: TopicPartition, low: int, high: int
    ) -> int:
        """The offset below which the group has handled everything of one partition."""
        key = (topic, position.partition)
        if position.offset == OFFSET_INVALID or position.offset < 0:  # nothing committed yet
            if self._start == "earliest":
                return low
            return self._first_ends.setdefault(key, high)
        self._first_ends.pop(key, None)
        # Records below the low watermark are gone: nothing there is to be read.
        offset = max(position.offset, low)
        stayed = self._last_committed.get(key) == offset
        self._last_committed[key] = offset
        if offset >= high or not stayed:
            return offset
        looked = self._looked.get(key)
        if looked is None or looked[:2] != (offset, high):
            looked = (offset, high, self._nothing_readable(consumer, topic, key[1], offset, high))
            self._looked[key] = looked
        return high if looked[2] else offset

    @staticmethod
    def _nothing_readable(
        consumer: Consumer, topic: str, partition: int, start: int, end: int
    ) -> bool:
        """Whether a ``read_committed`` reader gets no record from ``start`` to ``end`` (only
        transaction markers or aborted records are there). A look that cannot finish says no."""
        consumer.assign([TopicPartition(topic, partition, start)])
        try:
            deadline = time.monotonic() + _ASK_TIMEOUT_S
            while time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is None:
                    offset = message.offset()
                    return offset is not None and offset >= end
                if error.code() == KafkaError._PARTITION_EOF:
                    return True
                raise KafkaException(error)
            return False
        finally:
            consumer.unassign()
