"""The plugin's replay_into_topic and unique_topic fixtures on the real Kafka."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from pipeline.kafka.clients import build_consumer
from pipeline.replay.recording import RecordedMessage


def recorded(partition: int, offset: int, key: bytes | None, value: bytes) -> RecordedMessage:
    return RecordedMessage(
        topic="recorded.somewhere",
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=(("trace", b"\xff\x00"), ("trace", None), ("n", str(offset).encode())),
        timestamp_ms=1_767_225_600_000 + offset,
    )


def read_all(settings, topic: str, partitions: int, count: int, group: str) -> list:
    consumer = build_consumer(settings.kafka, group)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages: list = []
    idle = 0
    while len(messages) < count and idle < 20:
        batch = [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        messages += batch
        idle = 0 if batch else idle + 1
    consumer.close()
    return messages


def test_a_recording_goes_to_a_new_topic_with_its_partitions_kept(
    replay_into_topic, pipeline_settings, consumer_group
):
    messages = [recorded(n % 4, n // 4, f"k{n}".encode(), b"v%d" % n) for n in range(12)]

    replayed = replay_into_topic(messages, preserve_partitions=True)

    assert replayed.summary.sent == 12 and replayed.topic.startswith("test.topic-")
    read = read_all(pipeline_settings, replayed.topic, 4, 12, consumer_group)
    assert sorted((m.partition(), m.key(), m.value()) for m in read) == sorted(
        (m.partition, m.key, m.value) for m in messages
    )
    # Binary and null header values and a repeated name, as recorded.
    headers = {m.key: list(m.headers) for m in messages}
    assert all(m.headers() == headers[m.key()] for m in read)


def test_a_recording_goes_to_a_unique_topic_by_key(
    replay_into_topic, unique_topic, pipeline_settings, consumer_group
):
    messages = [recorded(0, n, f"k{n}".encode(), b"v") for n in range(30)]

    replayed = replay_into_topic(messages, unique_topic)

    assert (replayed.topic, replayed.summary.sent) == (unique_topic, 30)
    read = read_all(pipeline_settings, unique_topic, 3, 30, consumer_group)
    assert len(read) == 30 and len({m.partition() for m in read}) > 1
