"""Where a log shipper stands in its topic: the partitions it does not own, its lag, and where a
new group started at the end stands from the start.

For ``pipeline logs ship --until-idle`` (caught up only when every partition of the topic is
its own and read to the end) and the metrics line (records not yet read). The consumer is
passed in: see :class:`consumers.log_shipper.ShipperConsumer`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException, TopicPartition

from consumers.log_batch import Position, partition_lag
from pipeline.plurals import counted

if TYPE_CHECKING:
    from consumers.log_shipper import ShipperConsumer

__all__ = ["assigned_lag", "commit_starts_at_end", "not_caught_up", "partitions_not_owned"]

_METADATA_TIMEOUT_S = 5.0
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


def assigned_lag(consumer: ShipperConsumer) -> int | None:
    """The records not yet read in the consumer's assigned partitions (``None``: none assigned,
    or Kafka did not say)."""
    try:
        assigned = consumer.assignment()
        if not assigned:
            return None
        positions = consumer.position(assigned)
        committed: dict[Position, int] = {}
        if any(tp.offset < 0 for tp in positions):  # nothing read there since assigned
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in consumer.committed(assigned, timeout=2.0)
            }
        lag = 0
        for position in positions:
            low, high = consumer.get_watermark_offsets(position, timeout=2.0)
            start = committed.get((position.topic, position.partition), -1)
            lag += partition_lag(low, high, position.offset, start)
        return lag
    except KafkaException:
        return None


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
