"""EventProducer against the real broker."""

import time
from collections import defaultdict

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TopicPartition, murmur2

from pipeline.envelope import Event, decode_message, encode
from pipeline.kafka.clients import build_consumer
from pipeline.kafka.producer import DeliveryError, build_event_producer


def _events(count, keys):
    return [
        Event(
            source="/test", type="com.example.test", partitionkey=f"key-{n % keys}", data={"n": n}
        )
        for n in range(count)
    ]


def _read_all(settings, topic, group, isolation="read_committed", expected=None):
    """Every message of ``topic`` up to its end offsets as of the call (or ``expected`` of
    them): read until the consumer's position passes the end of each partition, however slow
    the first fetch is."""
    consumer = build_consumer(settings.kafka, group, **{"isolation.level": isolation})
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
    consumer.assign([TopicPartition(topic, tp.partition, 0) for tp in partitions])
    messages = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (expected is None or len(messages) < expected):
        messages.extend(m for m in consumer.consume(500, timeout=0.5) if m.error() is None)
        if all(tp.offset >= ends[tp.partition] for tp in consumer.position(partitions)):
            break
    consumer.close()
    return messages


def test_keyed_events_land_on_kafkas_murmur2_partition_in_order(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=6)
    events = _events(3_000, keys=97)
    with build_event_producer(pipeline_settings.kafka, pipeline_settings.producer) as producer:
        for event in events:
            producer.send(topic, event)
    assert producer.counters.sent == 3_000 and producer.counters.failed == 0

    messages = _read_all(pipeline_settings, topic, consumer_group, expected=3_000)
    assert len(messages) == 3_000
    order_per_key = defaultdict(list)
    for message in messages:
        event = decode_message(message)
        assert message.partition() == murmur2(message.key(), 6)
        order_per_key[event.partitionkey].append(event.data["n"])
    assert sorted(event.id for event in map(decode_message, messages)) == sorted(
        e.id for e in events
    )
    for sequence in order_per_key.values():
        assert sequence == sorted(sequence)


def test_every_way_of_sending_stamps_each_message_with_the_time_it_was_sent(
    pipeline_settings, new_topic, consumer_group
):
    # The producer hands confluent-kafka its arguments by position (partition -1, timestamp 0):
    # what arrives is keyed, carries its headers and the moment it was produced, on each path.
    topic = new_topic(partitions=3)
    bulk, with_report, encoded = _events(3, keys=3)
    reports = []
    before_ms = int(time.time() * 1000)
    with build_event_producer(pipeline_settings.kafka, pipeline_settings.producer) as producer:
        producer.send(topic, bulk)
        producer.send(topic, with_report, reports.append)
        producer.send(topic, encode(encoded))
    after_ms = int(time.time() * 1000)
    assert [report.ok for report in reports] == [True]

    messages = _read_all(pipeline_settings, topic, consumer_group, expected=3)
    arrived = {decode_message(message).id: message for message in messages}
    assert sorted(arrived) == sorted(event.id for event in (bulk, with_report, encoded))
    for event in (bulk, with_report, encoded):
        message = arrived[event.id]
        assert decode_message(message) == event
        assert message.key() == event.partitionkey.encode()
        assert message.partition() == murmur2(message.key(), 3)
        kind, stamp = message.timestamp()
        assert kind == TIMESTAMP_CREATE_TIME
        assert before_ms <= stamp <= after_ms


def test_send_and_wait_answers_with_the_acknowledged_offset(pipeline_settings, new_topic):
    topic = new_topic(partitions=1)
    producer = build_event_producer(pipeline_settings.kafka, pipeline_settings.producer)
    first = producer.send_and_wait(topic, _events(1, 1)[0])
    second = producer.send_and_wait(topic, _events(1, 1)[0])
    assert (first.partition, first.offset, second.offset) == (0, 0, 1)


def test_a_failed_delivery_is_raised_not_swallowed(pipeline_settings, unique_name):
    missing_topic = unique_name("never-created")  # the broker does not auto-create topics
    producer = build_event_producer(
        pipeline_settings.kafka, pipeline_settings.producer, **{"delivery.timeout.ms": 2_000}
    )
    event = _events(1, 1)[0]
    producer.send(missing_topic, event)
    with pytest.raises(DeliveryError) as raised:
        producer.flush(30)
    assert [failure.event_id for failure in raised.value.failures] == [event.id]
    assert producer.counters.failed == 1


def test_a_failures_only_producer_still_raises_each_failure_and_counts_the_successes(
    pipeline_settings, new_topic, consumer_group
):
    # The broker refuses every event of the small topic (its limit is below any event's size);
    # the other topic takes them. Only the refused ones come back as reports.
    small = new_topic(partitions=1, **{"max.message.bytes": "100"})
    good = new_topic(partitions=1)
    producer = build_event_producer(
        pipeline_settings.kafka, pipeline_settings.producer, failures_only=True
    )
    refused, taken = _events(2, 2), _events(5, 5)
    for event in taken:
        producer.send(good, event)
    for event in refused:
        producer.send(small, event)
    with pytest.raises(DeliveryError) as raised:
        producer.flush(30)
    assert sorted(failure.event_id for failure in raised.value.failures) == sorted(
        event.id for event in refused
    )
    assert "too large" in str(raised.value.failures[0].error)
    assert (producer.counters.sent, producer.counters.failed) == (5, 2)
    assert len(_read_all(pipeline_settings, good, consumer_group, expected=5)) == 5


def test_committed_transactions_are_read_and_aborted_ones_are_not(
    pipeline_settings, new_topic, unique_name, consumer_group
):
    topic = new_topic(partitions=3)
    producer = build_event_producer(
        pipeline_settings.kafka,
        pipeline_settings.producer,
        transactional_id=unique_name("tx"),
    )
    producer.init_transactions()
    kept, dropped = _events(10, 3), _events(10, 3)
    with producer.transaction():
        for event in kept:
            producer.send(topic, event)
    with pytest.raises(RuntimeError), producer.transaction():
        for event in dropped:
            producer.send(topic, event)
        producer.flush()
        raise RuntimeError("the processing step failed after sending")

    committed = _read_all(pipeline_settings, topic, consumer_group)
    assert sorted(decode_message(m).id for m in committed) == sorted(e.id for e in kept)
    everything = _read_all(pipeline_settings, topic, consumer_group + "-u", "read_uncommitted")
    assert len(everything) == 20  # the aborted ones were written, and are invisible above


def test_a_transaction_aborted_right_after_its_sends_ends_cleanly_and_is_forgotten(
    pipeline_settings, new_topic, unique_name, consumer_group
):
    # Aborted at once, before any delivery report, an abort raced librdkafka adding the
    # partitions to the transaction: INVALID_TXN_STATE, fatal, in about 3 runs of 8.
    topic = new_topic(partitions=6)
    kept = []
    for run in range(6):
        producer = build_event_producer(
            pipeline_settings.kafka,
            pipeline_settings.producer,
            transactional_id=unique_name(f"tx-abort-{run}"),
        )
        producer.init_transactions()
        events = _events(20, 20)
        with producer.transaction():
            for event in events:
                producer.send(topic, event)
        kept += events
        with pytest.raises(RuntimeError, match="handler failed"), producer.transaction():
            for event in _events(20, 20):
                producer.send(topic, event)
            raise RuntimeError("handler failed")
        assert (producer.counters.sent, producer.counters.failed) == (20, 0)
        producer.flush()  # nothing of the aborted transaction is raised

    committed = _read_all(pipeline_settings, topic, consumer_group)
    assert sorted(decode_message(m).id for m in committed) == sorted(e.id for e in kept)
