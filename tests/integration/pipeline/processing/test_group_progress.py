"""A consumer group's read-through time from Kafka: its committed offsets against the end
offsets sampled over time."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from confluent_kafka import TopicPartition

from pipeline.kafka.clients import build_consumer
from pipeline.kafka.partitioner import partition_for
from pipeline.processing.group_progress import GroupProgress
from tests.support.processor_runs import effect_event, produce


def _progress(settings, group: str, start: str = "earliest") -> GroupProgress:
    make = functools.partial(
        build_consumer, settings.kafka, group, **{"isolation.level": "read_uncommitted"}
    )
    return GroupProgress(make, start=start, every_s=0)  # type: ignore[arg-type]


def _commit(settings, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = build_consumer(settings.kafka, group)
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, offset) for p, offset in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def test_the_time_comes_once_the_group_has_committed_past_every_record_before_it(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=2)
    # Three records on partition 0 of 2 (key k's), none on partition 1.
    assert partition_for(b"k", 2) == 0
    produce(pipeline_settings, topic, [effect_event("k", n) for n in range(3)])
    progress = _progress(pipeline_settings, consumer_group)
    try:
        assert progress.read_through(topic) is None  # nothing committed, all still to read
        _commit(pipeline_settings, consumer_group, topic, {0: 2, 1: 0})
        assert progress.read_through(topic) is None  # one record short
        _commit(pipeline_settings, consumer_group, topic, {0: 3, 1: 0})

        before = datetime.now(UTC)
        moment = progress.read_through(topic)
        after = datetime.now(UTC)
    finally:
        progress.close()

    # The latest sample passed is the one taken in that last call.
    assert moment is not None and before <= moment <= after


def test_a_group_that_starts_at_the_end_has_read_through_what_it_will_never_read(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=1)
    produce(pipeline_settings, topic, [effect_event("k", n) for n in range(3)])
    latest = _progress(pipeline_settings, consumer_group, start="latest")
    earliest = _progress(pipeline_settings, consumer_group)
    try:
        assert latest.read_through(topic) is not None
        assert earliest.read_through(topic) is None
    finally:
        latest.close()
        earliest.close()


def test_a_topic_kafka_does_not_know_is_no_time_and_no_error(
    pipeline_settings, unique_name, consumer_group
):
    progress = _progress(pipeline_settings, consumer_group)
    try:
        assert progress.read_through(unique_name("absent")) is None
    finally:
        progress.close()
