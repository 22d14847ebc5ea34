"""The envelope through a real Kafka: we and the CloudEvents SDK read back what we wrote."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from pipeline.envelope import Event, decode, decode_message, encode
from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.settings import PipelineSettings

JSON_EVENT = Event(
    id="0190b6a4-3c2e-7d1a-9f3b-2c4d5e6f7a8b",
    source="/services/orders",
    type="com.example.order.created",
    time=datetime(2024, 7, 15, 13, 45, 35, 22_000, tzinfo=UTC),
    subject="order-42",
    partitionkey="order-42",
    traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    correlationid="req-7",
    causationid="0190b6a4-0000-7000-8000-000000000001",
    extensions={"tenant": "acme"},
    data={"order_id": "order-42", "total": 12.5, "items": [1, 2], "note": "café"},
)
BINARY_EVENT = Event(
    source="/services/files",
    type="com.example.file.uploaded",
    subject="report.bin",
    datacontenttype="application/octet-stream",
    data=b"\x00\x01\xfe\xff",
)


def _produce_and_consume(
    settings: PipelineSettings, topic: str, group: str, events: list[Event]
) -> list[Message]:
    """Produce ``events`` (encoded) to partition 0 of ``topic`` and consume them back in order."""
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)

    producer = build_producer(settings.kafka)
    for event in events:
        message = encode(event)
        producer.produce(
            topic,
            key=message.key,
            value=message.value,
            headers=message.headers,
            partition=0,
            on_delivery=delivered,
        )
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert failures == []

    consumer = build_consumer(settings.kafka, group)
    consumed: list[Message] = []
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 30
        while len(consumed) < len(events) and time.monotonic() < deadline:
            polled = consumer.poll(1.0)
            if polled is None:
                continue
            assert polled.error() is None, polled.error()
            consumed.append(polled)
    finally:
        consumer.close()
    assert len(consumed) == len(events), f"consumed {len(consumed)} of {len(events)} in 30 s"
    return consumed


def _sdk_v1() -> Any:
    """The SDK's classic API: ``cloudevents.kafka`` in 1.x, ``cloudevents.v1.kafka`` in 2.x."""
    try:
        from cloudevents import kafka
    except ImportError:
        from cloudevents.v1 import kafka
    return kafka


def test_events_read_back_from_kafka_are_identical(pipeline_settings, new_topic, consumer_group):
    topic = new_topic(partitions=1)

    consumed = _produce_and_consume(
        pipeline_settings, topic, consumer_group, [JSON_EVENT, BINARY_EVENT]
    )

    assert [decode_message(message) for message in consumed] == [JSON_EVENT, BINARY_EVENT]
    assert decode(consumed[0].value(), consumed[0].headers(), consumed[0].key()) == JSON_EVENT
    assert consumed[0].key() == b"order-42"
    assert consumed[0].headers() == encode(JSON_EVENT).headers
    assert consumed[1].key() is None
    assert consumed[1].value() == b"\x00\x01\xfe\xff"


def test_the_cloudevents_sdk_reads_our_events_from_kafka(
    pipeline_settings, new_topic, consumer_group
):
    kafka = _sdk_v1()
    topic = new_topic(partitions=1)

    json_message, binary_message = _produce_and_consume(
        pipeline_settings, topic, consumer_group, [JSON_EVENT, BINARY_EVENT]
    )

    read = kafka.from_binary(
        kafka.KafkaMessage(
            headers=dict(json_message.headers()),
            key=json_message.key(),
            value=json_message.value(),
        )
    )
    assert read["id"] == JSON_EVENT.id
    assert read["source"] == JSON_EVENT.source
    assert read["type"] == JSON_EVENT.type
    assert read["specversion"] == "1.0"
    assert datetime.fromisoformat(read["time"]) == JSON_EVENT.time
    assert read["subject"] == JSON_EVENT.subject
    assert read["datacontenttype"] == "application/json"
    assert read["traceparent"] == JSON_EVENT.traceparent
    assert read["correlationid"] == JSON_EVENT.correlationid
    assert read["causationid"] == JSON_EVENT.causationid
    assert read["tenant"] == "acme"
    assert read["partitionkey"] == b"order-42"  # the classic API takes the key, as bytes
    assert read.get_data() == JSON_EVENT.data

    read_binary = kafka.from_binary(
        kafka.KafkaMessage(
            headers=dict(binary_message.headers()),
            key=binary_message.key(),
            value=binary_message.value(),
        ),
        data_unmarshaller=lambda raw: raw,
    )
    assert read_binary["id"] == BINARY_EVENT.id
    assert read_binary["datacontenttype"] == "application/octet-stream"
    assert read_binary.get_data() == b"\x00\x01\xfe\xff"


def test_the_cloudevents_sdk_2_core_binding_reads_our_events_from_kafka(
    pipeline_settings, new_topic, consumer_group
):
    binding = pytest.importorskip("cloudevents.core.bindings.kafka")
    topic = new_topic(partitions=1)

    json_message, binary_message = _produce_and_consume(
        pipeline_settings, topic, consumer_group, [JSON_EVENT, BINARY_EVENT]
    )

    read = binding.from_binary_event(
        binding.KafkaMessage(
            headers=dict(json_message.headers()),
            key=json_message.key(),
            value=json_message.value(),
        )
    )
    assert read.get_id() == JSON_EVENT.id
    assert read.get_source() == JSON_EVENT.source
    assert read.get_type() == JSON_EVENT.type
    assert read.get_specversion() == "1.0"
    assert read.get_time() == JSON_EVENT.time
    assert read.get_subject() == JSON_EVENT.subject
    assert read.get_datacontenttype() == "application/json"
    for name in ("partitionkey", "traceparent", "correlationid", "causationid"):
        assert read.get_extension(name) == getattr(JSON_EVENT, name)
    assert read.get_extension("tenant") == "acme"
    assert read.get_data() == JSON_EVENT.data

    read_binary = binding.from_binary_event(
        binding.KafkaMessage(
            headers=dict(binary_message.headers()),
            key=binary_message.key(),
            value=binary_message.value(),
        )
    )
    assert read_binary.get_id() == BINARY_EVENT.id
    assert read_binary.get_data() == b"\x00\x01\xfe\xff"
