"""Where a new consumer group that starts at the end (``--start latest``) started, kept in Kafka
before it joins.

Kafka's ``auto.offset.reset=latest`` puts a group with no committed offset at the end of each
partition when it first reads it, and nothing keeps that position until the group's first
commit. A processor killed before then started again "at the end" of a later moment: the events
that came in between, some of them fetched already, were never handled. Committing the end
offsets of the partitions the group has committed nothing on, before it joins, makes "the end"
the one of the first start, whatever happens next.

A group that has commits was started before: a partition it has none on was added since (or
its topic subscribed since), so all that is there came after the group's start. Kafka's reset
would start it at the end too, skipping it; it is read from its beginning instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaException, TopicPartition

from pipeline.kafka.clients import build_consumer
from pipeline.settings import KafkaSettings

__all__ = ["pin_latest_start", "starting_positions"]

logger = logging.getLogger("pipeline.processing")


def starting_positions(committed: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """Where each partition the group has no commit on starts (pure): ``OFFSET_END`` on a
    topic it has no commit on at all (new to the group), ``OFFSET_BEGINNING`` on one it has
    commits on other partitions of (added since the group started)."""
    committed_topics = {tp.topic for tp in committed if tp.offset >= 0}
    return {
        TopicPartition(tp.topic, tp.partition): (
            OFFSET_BEGINNING if tp.topic in committed_topics else OFFSET_END
        )
        for tp in committed
        if tp.offset < 0
    }


def pin_latest_start(
    kafka: KafkaSettings, group: str, topics: Sequence[str], *, timeout_s: float = 10.0
) -> int:
    """Commit, for ``group``, where the partitions it has committed nothing on start
    (:func:`starting_positions`: a new topic's end offsets, an added partition's beginning);
    returns how many. Kafka refusing it (the group has members already, which commit their
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
        starts = starting_positions(consumer.committed(partitions, timeout=timeout_s))
        if not starts:
            return 0
        positions = [
            TopicPartition(
                tp.topic,
                tp.partition,
                consumer.get_watermark_offsets(tp, timeout=timeout_s)[side == OFFSET_END],
            )
            for tp, side in starts.items()
        ]
        consumer.commit(offsets=positions, asynchronous=False)
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
    for tp in positions:
        where = "end" if starts[TopicPartition(tp.topic, tp.partition)] == OFFSET_END else "start"
        logger.info(
            "%s starts %s[%d] at offset %d (its %s)",
            group,
            tp.topic,
            tp.partition,
            tp.offset,
            where,
        )
    return len(positions)
