"""``pipeline consume`` as a subprocess against the real broker: exactly what is in the topic.

Events are produced here with the EventProducer (whose delivery reports say where each landed)
or, for messages that are not events, with a plain producer.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from datetime import UTC, datetime

from confluent_kafka import TopicPartition

from pipeline.envelope import Event
from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.kafka.producer import build_event_producer
from tests.support.stack_cli import (
    PIPELINE,
    first_said,
    run_pipeline,
    run_pipeline_to_a_full_disk,
    said,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def produce(settings, topic, events):
    """Send ``events``; their deliveries (partition, offset) by event id."""
    deliveries = {}
    producer = build_event_producer(settings.kafka, settings.producer)
    for event in events:
        producer.send(topic, event, lambda d: deliveries.__setitem__(d.event_id, d))
    producer.flush()
    assert all(d.ok for d in deliveries.values()) and len(deliveries) == len(events)
    return deliveries


def numbered(count, start=0, keys=5):
    return [
        Event(source="/test", type="com.example.test", partitionkey=f"k{n % keys}", data={"n": n})
        for n in range(start, start + count)
    ]


def records(result):
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_prints_exactly_the_events_in_the_topic_with_their_partitions_and_offsets(
    pipeline_settings, new_topic
):
    topic = new_topic(partitions=3)
    full = Event(
        source="/services/orders",
        type="com.example.order.created",
        time=datetime(2024, 7, 15, 13, 45, 35, 22_000, tzinfo=UTC),
        subject="order-42",
        partitionkey="order-42",
        traceparent=TRACEPARENT,
        correlationid="req-7",
        causationid="cause-1",
        extensions={"tenant": "acme"},
        data={"order_id": "order-42", "total": 12.5, "note": "café", "gift": None},
    )
    binary = Event(
        source="/files",
        type="com.example.file",
        partitionkey="f",
        datacontenttype="application/octet-stream",
        data=b"\x00\x01\xfe\xff",
    )
    text = Event(source="/t", type="com.example.text", datacontenttype="text/plain", data=b"hi")
    events = [full, binary, text, *numbered(20)]
    deliveries = produce(pipeline_settings, topic, events)

    result = run_pipeline("consume", topic, "--from-beginning")

    printed = {record["id"]: record for record in records(result)}
    assert len(printed) == len(events) == len(result.stdout.splitlines())
    for event in events:
        record = printed[event.id]
        timestamp = record.pop("timestamp")
        assert isinstance(timestamp, int) and timestamp > 0
        assert (record["partition"], record["offset"]) == (
            deliveries[event.id].partition,
            deliveries[event.id].offset,
        )
        assert record["topic"] == topic
        assert record["key"] == event.partitionkey
    assert printed[full.id] == {
        "topic": topic,
        "partition": deliveries[full.id].partition,
        "offset": deliveries[full.id].offset,
        "key": "order-42",
        "id": full.id,
        "source": "/services/orders",
        "type": "com.example.order.created",
        "time": "2024-07-15T13:45:35.022000Z",
        "subject": "order-42",
        "partitionkey": "order-42",
        "correlationid": "req-7",
        "causationid": "cause-1",
        "traceparent": TRACEPARENT,
        "extensions": {"tenant": "acme"},
        "headers": [],
        "datacontenttype": "application/json",
        "data": {"order_id": "order-42", "total": 12.5, "note": "café", "gift": None},
    }
    assert printed[binary.id]["data"] is None
    assert base64.b64decode(printed[binary.id]["data_base64"]) == b"\x00\x01\xfe\xff"
    assert printed[text.id]["data"] == "hi"
    assert f"reading {topic}: up to {len(events)} messages" in result.stderr
    assert f"printed {len(events)} messages" in result.stderr


def test_a_message_that_is_not_an_event_is_printed_with_its_error_and_raw_value(
    pipeline_settings, new_topic
):
    topic = new_topic(partitions=1)
    producer = build_producer(pipeline_settings.kafka)
    producer.produce(topic, key=b"\xff", value=b"\x00not json", headers=[("x-app", b"legacy")])
    assert producer.flush(30) == 0
    produce(pipeline_settings, topic, numbered(1))

    first, second = records(run_pipeline("consume", topic, "--from-beginning"))

    assert first == {
        "topic": topic,
        "partition": 0,
        "offset": 0,
        "timestamp": first["timestamp"],
        "key": None,
        "key_base64": "/w==",
        "error": "missing ce_id, ce_source, ce_type, ce_specversion headers",
        "headers": [["x-app", "legacy"]],
        "value_base64": base64.b64encode(b"\x00not json").decode(),
    }
    assert second["data"] == {"n": 0}


def test_without_from_beginning_it_starts_at_the_end_and_prints_nothing(
    pipeline_settings, new_topic
):
    topic = new_topic(partitions=2)
    produce(pipeline_settings, topic, numbered(10))

    result = run_pipeline("consume", topic)

    assert records(result) == []
    assert "--from-beginning" in result.stderr


def test_max_stops_after_that_many_messages(pipeline_settings, new_topic):
    topic = new_topic(partitions=1)
    produce(pipeline_settings, topic, numbered(50))

    printed = records(run_pipeline("consume", topic, "--from-beginning", "--max", "7"))

    assert [record["offset"] for record in printed] == list(range(7))


def test_a_group_commits_what_it_printed_and_goes_on_from_there(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=3)
    first = produce(pipeline_settings, topic, numbered(30))

    run_1 = records(run_pipeline("consume", topic, "--group", consumer_group, "--from-beginning"))
    run_2 = records(run_pipeline("consume", topic, "--group", consumer_group, "--from-beginning"))
    later = produce(pipeline_settings, topic, numbered(12, start=30))
    run_3 = records(run_pipeline("consume", topic, "--group", consumer_group))

    assert sorted(record["id"] for record in run_1) == sorted(first)
    assert run_2 == []
    assert sorted(record["id"] for record in run_3) == sorted(later)
    consumer = build_consumer(pipeline_settings.kafka, consumer_group)
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in committed]
    finally:
        consumer.close()
    assert [tp.offset for tp in committed] == ends


def test_a_group_with_max_commits_only_the_messages_it_printed(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=1)
    produce(pipeline_settings, topic, numbered(10))

    run_1 = records(
        run_pipeline("consume", topic, "-g", consumer_group, "--from-beginning", "--max", "4")
    )
    run_2 = records(run_pipeline("consume", topic, "-g", consumer_group))

    assert [record["offset"] for record in run_1] == [0, 1, 2, 3]
    assert [record["offset"] for record in run_2] == [4, 5, 6, 7, 8, 9]


def test_follow_prints_messages_that_arrive_after_it_started(pipeline_settings, new_topic):
    topic = new_topic(partitions=2)
    produce(pipeline_settings, topic, numbered(3))
    process = subprocess.Popen(
        [PIPELINE, "consume", topic, "--follow", "--max", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert first_said(process.stderr).startswith(f"following {topic} from the end")
        later = produce(pipeline_settings, topic, numbered(2, start=3))
        stdout, _ = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == 0
    assert sorted(json.loads(line)["id"] for line in stdout.splitlines()) == sorted(later)


def test_a_closed_pipe_ends_it_quietly(pipeline_settings, new_topic):
    topic = new_topic(partitions=1)
    produce(pipeline_settings, topic, numbered(3_000))  # far more than a pipe's buffer holds
    process = subprocess.Popen(
        [PIPELINE, "consume", topic, "--from-beginning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.wait(timeout=120)

    assert json.loads(first)["offset"] == 0
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_an_unknown_topic_is_a_one_line_error_with_exit_code_2(unique_name):
    missing = unique_name("missing")

    result = run_pipeline("consume", missing, "--from-beginning")

    assert result.returncode == 2
    assert result.stdout == ""
    assert len(said(result.stderr)) == 1
    assert said(result.stderr)[0].startswith(f"error: topic {missing} does not exist")


def test_without_follow_a_topic_deleted_while_it_is_read_ends_the_run_with_an_error(
    pipeline_settings, new_topic, kafka_admin
):
    """librdkafka just stops fetching a deleted topic, with no error: the read must not hang.

    While nobody reads its stdout, ``pipeline consume`` prefetches about 100,000 messages
    (librdkafka's queued.min.messages) and no more, so the rest is never fetched once the topic
    is deleted, and the end offset seen at start can no longer be reached.
    """
    topic = new_topic(partitions=1)
    count = 130_000
    producer = build_producer(
        pipeline_settings.kafka, **{"queue.buffering.max.messages": count, "linger.ms": 50}
    )
    for _ in range(count):
        producer.produce(topic, value=b"x" * 100)
    assert producer.flush(60) == 0
    process = subprocess.Popen(
        [PIPELINE, "consume", topic, "--from-beginning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert first_said(process.stderr) == f"reading {topic}: up to {count:,} messages\n"
        kafka_admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=30)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr
    offsets = [json.loads(line)["offset"] for line in stdout.splitlines()]
    assert 0 < len(offsets) < count
    assert offsets == list(range(len(offsets)))
    assert re.fullmatch(
        rf"error: cannot read {re.escape(topic)} partition 0 to the end: "
        rf".*unknown (topic|partition).* \(stopped after printing {len(offsets):,} "
        rf"{'message' if len(offsets) == 1 else 'messages'}\)",
        stderr.strip().splitlines()[-1],
        flags=re.IGNORECASE,
    ), stderr


def test_a_stdout_that_cannot_be_written_is_one_line_not_a_traceback(new_topic, pipeline_settings):
    topic = new_topic(partitions=1)
    producer = build_producer(pipeline_settings.kafka)
    producer.produce(topic, b'{"n": 1}', b"k")
    assert producer.flush(30) == 0

    result = run_pipeline_to_a_full_disk("consume", topic, "--from-beginning")

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: cannot write to stdout: No space left on device (after 0 messages)"
    )
