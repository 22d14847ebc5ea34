"""A consumer group's read-through time from Kafka: its committed offsets against the end
offsets sampled over time."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from confluent_kafka import Producer, TopicPartition

from pipeline.kafka.clients import build_consumer, producer_config
from pipeline.kafka.partitioner import partition_for
from pipeline.processing.group_progress import CONSUMER_CONFIG, GroupProgress
from tests.support.processor_runs import effect_event, produce


def _progress(settings, group: str, start: str = "earliest") -> GroupProgress:
    make = functools.partial(build_consumer, settings.kafka, group, **CONSUMER_CONFIG)
    return GroupProgress(make, start=start)  # type: ignore[arg-type]


def _commit(settings, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = build_consumer(settings.kafka, group)
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, offset) for p, offset in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def _asked(progress: GroupProgress, topic: str) -> datetime | None:
    progress.read_through(topic)  # asked about: the refresh samples it
    progress.refresh()
    return progress.read_through(topic)


def test_the_time_comes_once_the_group_has_committed_past_every_record_before_it(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=2)
    # Three records on partition 0 of 2 (key k's), none on partition 1.
    assert partition_for(b"k", 2) == 0
    produce(pipeline_settings, topic, [effect_event("k", n) for n in range(3)])
    progress = _progress(pipeline_settings, consumer_group)
    try:
        assert progress.read_through(topic) is None  # not asked about before: nothing known
        assert _asked(progress, topic) is None  # nothing committed, all still to read
        _commit(pipeline_settings, consumer_group, topic, {0: 2, 1: 0})
        assert _asked(progress, topic) is None  # one record short
        assert _asked(progress, topic) is None  # however long it stays so
        _commit(pipeline_settings, consumer_group, topic, {0: 3, 1: 0})

        before = datetime.now(UTC)
        moment = _asked(progress, topic)
        after = datetime.now(UTC)
    finally:
        progress.close()

    # The latest sample passed is the one taken in that last refresh.
    assert moment is not None and before <= moment <= after


def test_a_group_that_starts_at_the_end_skips_only_what_was_there_when_first_seen(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=1)
    produce(pipeline_settings, topic, [effect_event("k", n) for n in range(3)])
    latest = _progress(pipeline_settings, consumer_group, start="latest")
    earliest = _progress(pipeline_settings, consumer_group)
    try:
        first = _asked(latest, topic)
        assert first is not None  # the three records before it will never be read
        assert _asked(earliest, topic) is None  # from the beginning they will

        produce(pipeline_settings, topic, [effect_event("k", 3)])  # the group will read this
        assert _asked(latest, topic) == first  # not past it until the group commits it
    finally:
        latest.close()
        earliest.close()


def test_a_transaction_marker_after_the_last_record_does_not_hold_the_time_for_ever(
    pipeline_settings, new_topic, consumer_group, unique_name
):
    # A transactional write (as pipeline dlq redrive does) ends with a commit marker, which
    # takes an offset no member ever gets: the group commits one below the end.
    topic = new_topic(partitions=1)
    producer = Producer(
        producer_config(pipeline_settings.kafka, **{"transactional.id": unique_name("tx")})
    )
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"{}")
    producer.commit_transaction()
    progress = _progress(pipeline_settings, consumer_group)
    try:
        _commit(pipeline_settings, consumer_group, topic, {0: 0})
        assert _asked(progress, topic) is None
        assert _asked(progress, topic) is None  # the record at 0 is still to be read
        _commit(pipeline_settings, consumer_group, topic, {0: 1})  # past it; the marker is at 1
        _asked(progress, topic)

        assert _asked(progress, topic) is not None  # the commit stayed put: nothing comes
    finally:
        progress.close()


def test_a_topic_kafka_does_not_know_is_no_time_and_no_error(
    pipeline_settings, unique_name, consumer_group
):
    progress = _progress(pipeline_settings, consumer_group)
    try:
        assert _asked(progress, unique_name("absent")) is None
    finally:
        progress.close()
