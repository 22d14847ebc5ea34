"""record_topics against the real broker: where a recording starts and where it stops."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition

from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.kafka.watermarks import read_watermarks
from pipeline.replay.bounds import FromGroup, FromTime, Stop
from pipeline.replay.recorder import record_topics

#: A fixed past time: messages stamped from here on, one second apart.
BASE_MS = 1_700_000_000_000


@pytest.fixture
def new_topic(new_topic):
    """Topics that keep their messages: the stack's broker checks retention every 60 s, and a
    topic's default 7 days would delete messages stamped BASE_MS at the next check, between
    producing and recording (seen once in CI: a topic recorded with nothing in it)."""

    def make(partitions=3, **configs):
        return new_topic(partitions=partitions, **{"retention.ms": "-1", **configs})

    return make


def produce_stamped(settings, topic, partitions, count, transactional_id=None):
    """``count`` messages per partition, value ``p:n``, stamped BASE_MS + n seconds; fails
    unless every one was acknowledged (``flush`` returning 0 alone does not say so)."""
    config = {} if transactional_id is None else {"transactional.id": transactional_id}
    producer = build_producer(settings.kafka, **config)
    failed = []
    if transactional_id is not None:
        producer.init_transactions(30)
        producer.begin_transaction()
    for partition in range(partitions):
        for n in range(count):
            producer.produce(
                topic,
                f"{partition}:{n}".encode(),
                b"k",
                partition=partition,
                timestamp=BASE_MS + n * 1_000,
                on_delivery=lambda error, _message: failed.append(error) if error else None,
            )
    if transactional_id is not None:
        producer.commit_transaction(30)
    assert producer.flush(60) == 0
    assert failed == [], f"not produced to {topic}: {failed}"


def values(messages):
    return [m.value.decode() for m in messages]


def test_from_group_starts_at_its_committed_offsets_and_leaves_them_as_they_were(
    pipeline_settings, new_topic, consumer_group, caplog
):
    topic = new_topic(partitions=2)
    produce_stamped(pipeline_settings, topic, 2, 5)
    group = build_consumer(pipeline_settings.kafka, consumer_group)
    group.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)

    with caplog.at_level("WARNING", logger="pipeline.replay"):
        recorded = list(
            record_topics(
                pipeline_settings.kafka,
                [topic],
                start=FromGroup(consumer_group),
                stop=Stop(at_end=True),
            )
        )

    assert (
        f"group {consumer_group} has committed no offset on 1 of the 2 partitions: those are "
        "recorded from the beginning"
    ) in caplog.text
    by_partition = {p: [m.offset for m in recorded if m.partition == p] for p in (0, 1)}
    assert by_partition == {0: [3, 4], 1: [0, 1, 2, 3, 4]}  # nothing committed: the beginning
    committed = group.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=15)
    assert [tp.offset for tp in committed] == [3, -1001]  # only read, never committed
    group.close()


def test_from_a_group_that_committed_nothing_records_everything_and_says_so(
    pipeline_settings, new_topic, caplog
):
    topic = new_topic(partitions=2)
    produce_stamped(pipeline_settings, topic, 2, 3)

    with caplog.at_level("WARNING", logger="pipeline.replay"):
        recorded = list(
            record_topics(
                pipeline_settings.kafka,
                [topic],
                start=FromGroup("a-mistyped-group"),
                stop=Stop(at_end=True),
            )
        )

    assert len(recorded) == 6
    assert (
        f"group a-mistyped-group has committed no offset on {topic}: recording from the "
        "beginning (is that the group's name?)"
    ) in caplog.text


def test_from_time_until_time_keeps_the_messages_stamped_in_between(pipeline_settings, new_topic):
    topic = new_topic(partitions=2)
    produce_stamped(pipeline_settings, topic, 2, 10)

    recorded = list(
        record_topics(
            pipeline_settings.kafka,
            [topic],
            start=FromTime(BASE_MS + 4_000),
            stop=Stop(until_ms=BASE_MS + 7_000),  # long past: it also ends at today's end
        )
    )

    assert sorted(values(recorded)) == ["0:4", "0:5", "0:6", "1:4", "1:5", "1:6"]
    assert {m.timestamp_type for m in recorded} == {"create"}
    assert all(BASE_MS + 4_000 <= m.timestamp_ms < BASE_MS + 7_000 for m in recorded)


def test_max_stops_after_that_many_and_each_partition_stays_in_order(pipeline_settings, new_topic):
    topic = new_topic(partitions=3)
    produce_stamped(pipeline_settings, topic, 3, 20)
    progress = []

    recorded = list(
        record_topics(
            pipeline_settings.kafka,
            [topic],
            start="beginning",
            stop=Stop(max_messages=25),
            on_progress=progress.append,
        )
    )

    assert len(recorded) == 25 == sum(progress)
    for partition in range(3):
        offsets = [m.offset for m in recorded if m.partition == partition]
        assert offsets == list(range(len(offsets)))


def test_until_end_finishes_past_a_committed_transactions_marker(
    pipeline_settings, new_topic, unique_name
):
    # The last offset of each partition is the transaction's commit marker, which a consumer
    # never receives: the end is known from the end-of-partition event instead.
    topic = new_topic(partitions=2)
    produce_stamped(pipeline_settings, topic, 2, 3, transactional_id=unique_name("tx"))
    # The commit returns before the brokers wrote the markers: until then the end a
    # read-committed client sees (the last stable offset) is still 0, which a recording
    # "until the end of now" rightly stops at (seen once in CI). Wait for 3 messages + marker.
    _wait_for_committed_end(pipeline_settings, topic, partitions=2, end=4)

    recorded = list(
        record_topics(pipeline_settings.kafka, [topic], start="beginning", stop=Stop(at_end=True))
    )

    assert sorted(values(recorded)) == ["0:0", "0:1", "0:2", "1:0", "1:1", "1:2"]


def test_from_the_end_until_the_end_records_nothing_and_ends(pipeline_settings, new_topic):
    topic = new_topic(partitions=2)
    produce_stamped(pipeline_settings, topic, 2, 3)
    # Ending at all is the point: every partition starts at its end.
    assert list(record_topics(pipeline_settings.kafka, [topic], stop=Stop(at_end=True))) == []


def test_several_topics_are_recorded_together(pipeline_settings, new_topic):
    first, second = new_topic(partitions=1), new_topic(partitions=2)
    produce_stamped(pipeline_settings, first, 1, 2)
    produce_stamped(pipeline_settings, second, 2, 2)

    recorded = list(
        record_topics(
            pipeline_settings.kafka, [first, second], start="beginning", stop=Stop(at_end=True)
        )
    )

    assert sorted((m.topic, m.partition, m.offset) for m in recorded) == sorted(
        [
            (first, 0, 0),
            (first, 0, 1),
            (second, 0, 0),
            (second, 0, 1),
            (second, 1, 0),
            (second, 1, 1),
        ]
    )


def _wait_for_committed_end(settings, topic: str, *, partitions: int, end: int) -> None:
    consumer = build_consumer(settings.kafka, "test-committed-end")
    try:
        deadline = time.monotonic() + 30
        while True:
            ends = [
                read_watermarks(consumer, topic, partition, timeout_s=10)[1]
                for partition in range(partitions)
            ]
            if all(found >= end for found in ends):
                return
            assert time.monotonic() < deadline, f"committed ends {ends}, not {end}, after 30 s"
            time.sleep(0.1)
    finally:
        consumer.close()
