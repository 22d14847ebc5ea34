"""The hand-written murmur2 partitioner against the partitions a real producer chose."""

from __future__ import annotations

from pipeline.kafka.clients import build_producer
from pipeline.kafka.partitioner import partition_for


def test_keys_land_where_the_written_out_partitioner_says(pipeline_settings, new_topic):
    topic = new_topic(partitions=7)
    keys = [f"customer-{n}".encode() for n in range(300)] + [b"", b"\xff\x00binary"]
    chosen: dict[bytes, int] = {}

    def delivered(error, message):
        assert error is None, error
        chosen[message.key()] = message.partition()

    producer = build_producer(pipeline_settings.kafka)
    for key in keys:
        producer.produce(topic, key=key, value=b"v", on_delivery=delivered)
    assert producer.flush(60) == 0

    assert chosen == {key: partition_for(key, 7) for key in keys}
    assert len(set(chosen.values())) == 7
