"""Where a new consumer group that starts at the end (``--start latest``) started, kept in Kafka
before it joins.

Kafka's ``auto.offset.reset=latest`` puts a group with no committed offset at the end of each
partition when it first reads it, and nothing keeps that position until the group's first
commit. A processor killed before then started again "at the end" of a later moment: the events
that came in between, some of them fetched already, were never handled. Committing the end
offsets of the partitions the group has committed nothing on, before it joins, makes "the end"
the one of the first start, whatever happens next.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import KafkaException, TopicPartition

from pipeline.kafka.clients import build_consumer
from pipeline.settings import KafkaSettings

__all__ = ["pin_latest_start"]

logger = logging.getLogger("pipeline.processing")


def pin_latest_start(
    kafka: KafkaSettings, group: str, topics: Sequence[str], *, timeout_s: float = 10.0
) -> int:
    """Commit, for ``group``, the end offsets of ``topics``' partitions it has committed nothing
    on; returns how many. Kafka refusing it (the group has members already, which commit their
    own positions) is logged, and the group starts as it would have."""
    consumer = build_consumer(kafka, group, **{"enable.auto.commit": False})  # never joins
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(
                consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
            )
        ]
        new = [tp for tp in consumer.committed(partitions, timeout=timeout_s) if tp.offset < 0]
        if not new:
            return 0
        ends = [
            TopicPartition(
                tp.topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=timeout_s)[1]
            )
            for tp in new
        ]
        consumer.commit(offsets=ends, asynchronous=False)
    except KafkaException as error:
        logger.info(
            "%s starts at the end without noting where first (%s): a stop before its first "
            "commit would start it at a later end",
            group,
            error.args[0].str() if error.args else error,
        )
        return 0
    finally:
        consumer.close()
    logger.info("%s starts at the end: %d partitions noted at their end offsets", group, len(ends))
    return len(ends)
