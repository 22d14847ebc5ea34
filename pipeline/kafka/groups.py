"""Consumer-group positions set from outside the group (no member joins)."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import TopicPartition

from pipeline.kafka.clients import build_consumer
from pipeline.kafka.watermarks import read_watermarks
from pipeline.settings import KafkaSettings

__all__ = ["commit_group_at_end"]


def commit_group_at_end(
    kafka: KafkaSettings, group: str, topics: Sequence[str], *, timeout_s: float = 30.0
) -> int:
    """Commit ``group``'s offsets at the current end of every partition of ``topics``, so the
    group's next member reads only what comes after (a benchmark or test that shares topics
    with earlier runs). The group must have no active member. Returns the partitions set."""
    consumer = build_consumer(kafka, group)
    try:
        ends = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
            for partition in sorted(metadata.partitions):
                _, high = read_watermarks(consumer, topic, partition, timeout_s=timeout_s)
                ends.append(TopicPartition(topic, partition, high))
        consumer.commit(offsets=ends, asynchronous=False)
        return len(ends)
    finally:
        consumer.close()
