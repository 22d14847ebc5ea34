"""Where a log shipper stands in its topic: the partitions it does not own, its lag, and where a
new group started at the end stands from the start.

For ``pipeline logs ship --until-idle`` (caught up only when every partition of the topic is
its own and read to the end), the metrics line (records not yet read) and the lag gauge, kept
fresh by :class:`LagMeter`. The consumer is passed in (:class:`ShipperConsumer`: what the
shipper uses of ``confluent_kafka.Consumer``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from confluent_kafka import KafkaException, TopicPartition

from consumers.log_batch import Position, partition_lag
from consumers.log_shipper_metrics import ShipperCounters
from pipeline.plurals import counted

__all__ = [
    "LAG_REFRESH_S",
    "LagMeter",
    "ShipperConsumer",
    "assigned_lag",
    "commit_starts_at_end",
    "not_caught_up",
    "partitions_not_owned",
]


class ShipperConsumer(Protocol):
    """What the shipper uses of ``confluent_kafka.Consumer``."""

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[[Any, list[TopicPartition]], None] | None = ...,
        on_revoke: Callable[[Any, list[TopicPartition]], None] | None = ...,
        on_lost: Callable[[Any, list[TopicPartition]], None] | None = ...,
    ) -> None: ...
    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Any]: ...
    def commit(self, *args: Any, **kwargs: Any) -> Any: ...
    def committed(
        self, partitions: list[TopicPartition], timeout: float = ...
    ) -> list[TopicPartition]: ...
    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...
    def assignment(self) -> list[TopicPartition]: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = ..., cached: bool = ...
    ) -> tuple[int, int]: ...


_METADATA_TIMEOUT_S = 5.0
#: How long the lag waits for each of Kafka's answers (the committed offsets, an end offset).
_LAG_ANSWER_S = 2.0
#: How often the lag gauge is measured again, as the processors' ``pipeline_consumer_lag``
#: (``pipeline.processing.faust.binding.LAG_REFRESH_S``): a scrape sees a lag about this old.
LAG_REFRESH_S = 1.0
# librdkafka's "no offset" (OFFSET_INVALID): no position, nothing committed, no end known yet.
_NO_OFFSET = -1001
_log = logging.getLogger(__name__)


def partitions_not_owned(
    consumer: ShipperConsumer, topic: str, assigned: Collection[Position]
) -> list[int] | None:
    """The partitions of ``topic`` not in ``assigned`` (``[]``: the shipper owns them all);
    ``None`` when Kafka does not say."""
    try:
        metadata = consumer.list_topics(topic, timeout=_METADATA_TIMEOUT_S)
    except KafkaException:
        return None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return None
    return sorted(p for p in found.partitions if (topic, p) not in assigned)


def not_caught_up(topic: str, group: str, missing: list[int] | None, waited_s: float) -> str:
    """Why an idle run cannot say it caught up (``missing``: :func:`partitions_not_owned`)."""
    if missing is None:
        return (
            f"--until-idle: Kafka did not say which partitions {topic} has, for "
            f"{waited_s:.0f} s: not known to be caught up; the next run ships what is left"
        )
    return (
        f"--until-idle: {counted(len(missing), 'partition')} of {topic} "
        f"({', '.join(map(str, missing))}) stayed with another member of group "
        f"{group} for {waited_s:.0f} s (another shipper running, or one that "
        "died and whose session has not ended): not caught up; their records were not "
        "shipped by this run"
    )


def assigned_lag(
    consumer: ShipperConsumer,
    *,
    cached: bool = False,
    committed: dict[Position, int] | None = None,
) -> int | None:
    """The records not yet read in the consumer's assigned partitions (``None``: none assigned,
    or Kafka did not say): each one's end offset minus the consumer's position there, or,
    where it read nothing since the assignment, minus the group's committed offset.

    ``cached``: the end offsets as the consumer's last fetch answers gave them (no request;
    Kafka is asked for a partition whose end is not known yet). ``committed``: the committed
    offsets known already, for the partitions nothing was read from (the others are asked for,
    and added to it)."""
    try:
        assigned = consumer.assignment()
        if not assigned:
            return None
        positions = consumer.position(assigned)
        known = {} if committed is None else committed
        unread = [tp for tp in positions if tp.offset < 0 and (tp.topic, tp.partition) not in known]
        if unread:  # nothing read there since assigned: from the group's committed offset
            asked = consumer.committed(unread, timeout=_LAG_ANSWER_S)
            known.update({(tp.topic, tp.partition): tp.offset for tp in asked})
        lag = 0
        for position in positions:
            start = known.get((position.topic, position.partition), -1)
            low, high = _NO_OFFSET, _NO_OFFSET
            if cached:
                low, high = consumer.get_watermark_offsets(position, cached=True)
            # (The start of a partition neither read nor committed is its low watermark, which
            # librdkafka keeps only with statistics on.)
            if high < 0 or (low < 0 and position.offset < 0 and start < 0):
                low, high = consumer.get_watermark_offsets(position, timeout=_LAG_ANSWER_S)
            lag += partition_lag(low, high, position.offset, start)
        return lag
    except KafkaException:
        return None


class LagMeter:
    """Keeps ``counters.lag`` (the gauge ``pipeline_log_shipper_lag``, and the metrics line's
    ``lag=``) the lag of now: measured after each batch read, at once when the assignment
    changed, and every :data:`LAG_REFRESH_S` (new records while none are read), from the
    consumer's own positions and the partitions' end offsets (:func:`assigned_lag`).

    The end offsets are the ones the consumer's fetches bring (a millisecond for every
    partition): asked of Kafka, each took half a second, as long as the fetch that Kafka
    answers before it on the same connection waits for new records. Kafka is asked for a
    partition whose end no fetch brought yet, and for all of them while they are paused
    (Elasticsearch away: nothing is fetched, and the gauge still shows the backlog growing).
    The committed offsets (where a partition nothing was read from since the assignment
    starts) are asked once for each assignment: the group commits only what this shipper
    read.

    The gauge was the figure of the first batch after the assignment until the next metrics
    line (every 30 s): a backlog long cleared, for an alert."""

    def __init__(self, consumer: ShipperConsumer, counters: ShipperCounters) -> None:
        self._consumer = consumer
        self._counters = counters
        #: Seconds between measurements (:data:`LAG_REFRESH_S`).
        self.every_s = LAG_REFRESH_S
        self._assignment: float | None = None  # the assignment (when it came) last measured
        self._measured_at = -math.inf
        self._committed: dict[Position, int] = {}

    def refresh(self, assigned_at: float, *, read: bool = False, paused: bool = False) -> None:
        """:meth:`measure` if records were ``read`` (the positions moved), the assignment
        changed (``assigned_at``: when it did) or :attr:`every_s` passed since the last
        measurement."""
        new = assigned_at != self._assignment
        if read or new or time.monotonic() - self._measured_at >= self.every_s:
            self.measure(assigned_at, paused=paused)

    def measure(self, assigned_at: float, *, paused: bool = False) -> None:
        """Measure the lag now; ``paused``: nothing is being fetched (ask Kafka for the end
        offsets)."""
        if assigned_at != self._assignment:
            self._committed = {}
        self._assignment, self._measured_at = assigned_at, time.monotonic()
        self._counters.lag = assigned_lag(
            self._consumer, cached=not paused, committed=self._committed
        )


def commit_starts_at_end(consumer: ShipperConsumer, partitions: list[TopicPartition]) -> None:
    """Commit the end of each of ``partitions`` the group never committed (``--start latest``):
    where the shipper starts reading it. Uncommitted, a partition nothing new reached counted
    its whole history as lag for ever, and a later run without ``--start latest`` read it from
    its first record (its dead letters again). A failure is only logged: the run goes on."""
    try:
        starts = []
        for tp in consumer.committed(partitions, timeout=_METADATA_TIMEOUT_S):
            if tp.offset < 0:  # none committed
                _low, high = consumer.get_watermark_offsets(tp, timeout=_METADATA_TIMEOUT_S)
                starts.append(TopicPartition(tp.topic, tp.partition, high))
        if starts:
            consumer.commit(offsets=starts, asynchronous=False)
    except KafkaException as error:
        _log.warning("could not commit where the new group starts (--start latest): %s", error)
