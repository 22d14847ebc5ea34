"""``pipeline dlq inspect|redrive`` as a subprocess against the real broker.

Each test has its own topic and ``<topic>.dlq``; dead letters are written there with
``dead_letter_message`` through a plain producer, and what the commands sent back is read from
the original topic with a plain read_committed consumer, independent of the code under test.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from pipeline.dead_letters.letter import (
    DEAD_LETTERED_AT,
    REDRIVE_ID,
    REDRIVE_LAST,
    REDRIVE_OF,
    Failure,
    dead_letter_message,
    read_dead_letter,
    redrive_message,
    redriven_marker,
)
from pipeline.dead_letters.redrive import redrive_transactional_id
from pipeline.envelope import Event, decode, encode
from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.kafka.producer import build_event_producer
from pipeline.topics.spec import dlq_name
from tests.support.stack_cli import run_pipeline, run_pipeline_to_a_full_disk, said

DECLINED = Failure(
    reason="retries_exhausted",
    error_type="app.payments.PaymentDeclined",
    message="card declined for order",
    stacktrace='Traceback (most recent call last):\n  File "app.py", line 1\nPaymentDeclined',
    attempts=5,
)
INVALID = Failure(
    reason="schema_invalid",
    error_type="pydantic_core._pydantic_core.ValidationError",
    message="1 validation error for PlaceOrder",
)


def parked(by: str) -> Failure:
    return Failure(
        reason="key_parked",
        error_type="pipeline.KeyParked",
        message=f"key parked by {by}",
        parked_by=by,
    )


@pytest.fixture
def topic_with_dlq(new_topic, kafka_admin):
    """A new topic and its ``<topic>.dlq`` (3 partitions each), both deleted after."""
    topic = new_topic(partitions=3, prefix="orders")
    dlq = dlq_name(topic)
    kafka_admin.create_topics([NewTopic(dlq, 3, 1)], operation_timeout=30)[dlq].result(timeout=30)
    yield topic, dlq
    for future in kafka_admin.delete_topics([dlq], operation_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)


def order(key: str, n: int) -> Event:
    return Event(
        source="/orders",
        type="com.example.order.placed",
        partitionkey=key,
        correlationid=f"req-{n}",
        data={"order_id": key, "n": n},
    )


def write_dead_letters(settings, topic, dlq, entries):
    """Dead-letter ``(event, failure)`` pairs as a processor would: original offsets 100, 101..."""
    producer = build_producer(settings.kafka)
    for offset, (event, failure) in enumerate(entries, start=100):
        message = encode(event)
        dead = dead_letter_message(
            key=message.key,
            value=message.value,
            headers=message.headers,
            topic=topic,
            partition=1,
            offset=offset,
            timestamp_ms=1_700_000_000_000 + offset,
            consumer_group="orders-processor",
            failure=failure,
        )
        producer.produce(dlq, key=dead.key, value=dead.value, headers=dead.headers)
    assert producer.flush(30) == 0


def scenario(settings, topic, dlq):
    """Key a: a failure and two parked followers; key b: a schema error; key c: a failure."""
    a1, a2, a3, b1, c1 = order("a", 1), order("a", 2), order("a", 3), order("b", 4), order("c", 5)
    write_dead_letters(
        settings,
        topic,
        dlq,
        [
            (a1, DECLINED),
            (b1, INVALID),
            (a2, parked(a1.id)),
            (c1, DECLINED),
            (a3, parked(a1.id)),
        ],
    )
    return {"a1": a1, "a2": a2, "a3": a3, "b1": b1, "c1": c1}


def read_topic(settings, topic, group, timeout_s=30.0):
    """Every committed message of ``topic`` up to its end offsets now, per partition in order."""
    consumer = build_consumer(settings.kafka, group, **{"enable.partition.eof": True})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions
        }
        pending = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
        messages = []
        deadline = time.monotonic() + timeout_s
        while pending:
            assert time.monotonic() < deadline, f"{topic} not read to its end: {pending}"
            for message in consumer.consume(500, timeout=0.5):
                error, partition = message.error(), message.partition()
                end = ends[partition][1]
                if error is None and message.offset() < end:
                    messages.append(message)
                    if message.offset() + 1 >= end:
                        pending.discard(partition)
                elif (
                    error is not None
                    and error.code() == KafkaError._PARTITION_EOF
                    and message.offset() >= end
                ):
                    pending.discard(partition)
            for position in consumer.position([TopicPartition(topic, p) for p in pending]):
                if position.offset >= ends[position.partition][1]:
                    pending.discard(position.partition)
    finally:
        consumer.close()
    return messages


def ndjson(result):
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# --- inspect ----------------------------------------------------------------------------------


def test_inspect_table_shows_every_pending_dead_letter_with_its_reason_and_counts(
    pipeline_settings, topic_with_dlq
):
    topic, dlq = topic_with_dlq
    scenario(pipeline_settings, topic, dlq)

    result = run_pipeline("dlq", "inspect", topic)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    for column in ("dlq p:offset", "key", "reason", "error type", "attempts", "dead-lettered at"):
        assert column in out
    assert "PaymentDeclined" in out and "ValidationError" in out  # class names
    assert out.count("com.example.order.placed") == 5
    assert out.count("key_parked") == 2 + 1  # two rows and the summary
    assert "card declined" in out
    assert "[1]@100" in out and "[1]@104" in out
    assert (
        f"5 dead letters shown (pending) in {dlq}; by reason: retries_exhausted 2, "
        "key_parked 2, schema_invalid 1"
    ) in out


def test_inspect_ndjson_prints_every_field_and_the_filters_select(
    pipeline_settings, topic_with_dlq
):
    topic, dlq = topic_with_dlq
    events = scenario(pipeline_settings, topic, dlq)

    records = ndjson(run_pipeline("dlq", "inspect", dlq, "--output", "ndjson"))

    assert sorted(record["event_id"] for record in records) == sorted(e.id for e in events.values())
    first = next(record for record in records if record["event_id"] == events["a1"].id)
    assert first["reason"] == "retries_exhausted"
    assert first["error_type"] == "app.payments.PaymentDeclined"
    assert first["stacktrace"] == DECLINED.stacktrace
    assert first["attempts"] == 5
    assert (first["original_topic"], first["original_partition"], first["original_offset"]) == (
        topic,
        1,
        100,
    )
    assert first["original_timestamp"] == 1_700_000_000_100
    assert first["consumer_group"] == "orders-processor"
    assert first["key"] == "a" and first["redriven"] is False
    assert json.loads(first["value"]) == {"order_id": "a", "n": 1}
    assert ["ce_id", events["a1"].id] in first["headers"]
    assert first["dlq_topic"] == dlq

    def ids(*filters):
        return {
            r["event_id"]
            for r in ndjson(run_pipeline("dlq", "inspect", topic, "-o", "ndjson", *filters))
        }

    assert ids("--reason", "key_parked") == {events["a2"].id, events["a3"].id}
    assert ids("--key", "b") == {events["b1"].id}
    assert ids("--error-type", "PaymentDeclined") == {events["a1"].id, events["c1"].id}
    assert ids("--error-type", "PaymentDeclined", "--key", "c") == {events["c1"].id}
    assert len(ids("--limit", "2")) == 2


def test_inspect_since_shows_only_the_dead_letters_of_the_later_run(
    pipeline_settings, topic_with_dlq
):
    # An earlier run's dead letters (3 hours ago) and this run's (now), each with the
    # dlq.dead_lettered_at header or without it (then the Kafka message timestamp counts); and
    # two whose header and message timestamp disagree: the header wins.
    topic, dlq = topic_with_dlq
    now = datetime.now(UTC)
    before = now - timedelta(hours=3)
    producer = build_producer(pipeline_settings.kafka)
    events = {}
    letters = [  # name: (header's time or None, message timestamp)
        ("old", before, before),
        ("old-no-header", None, before),
        ("old-by-header", before, now),
        ("new", now, now),
        ("new-no-header", None, now),
        ("new-by-header", now, before),
    ]
    for offset, (name, header, stamp) in enumerate(letters, start=100):
        events[name] = order(f"k{offset}", offset)
        message = encode(events[name])
        dead = dead_letter_message(
            key=message.key,
            value=message.value,
            headers=message.headers,
            topic=topic,
            partition=0,
            offset=offset,
            timestamp_ms=None,
            consumer_group="orders-processor",
            failure=DECLINED,
            now=header or stamp,
        )
        headers = [(n, v) for n, v in dead.headers if header is not None or n != DEAD_LETTERED_AT]
        producer.produce(
            dlq,
            key=dead.key,
            value=dead.value,
            headers=headers,
            timestamp=int(stamp.timestamp() * 1000),
        )
    assert producer.flush(30) == 0
    later = {events[name].id for name in ("new", "new-no-header", "new-by-header")}
    an_hour_ago = f"{now - timedelta(hours=1):%Y-%m-%dT%H:%M:%S}"  # no offset: UTC

    for since in ("1h", an_hour_ago, f"{an_hour_ago}+00:00"):
        result = run_pipeline("dlq", "inspect", topic, "--since", since, "-o", "ndjson")

        assert {record["event_id"] for record in ndjson(result)} == later, since
        assert f"3 dead letters shown of 6 pending in {dlq}" in result.stderr
    assert len(ndjson(run_pipeline("dlq", "inspect", topic, "-o", "ndjson"))) == 6


# --- redrive ----------------------------------------------------------------------------------


def test_inspect_ndjson_to_a_full_disk_is_one_line_not_a_traceback(
    pipeline_settings, topic_with_dlq
):
    topic, dlq = topic_with_dlq
    scenario(pipeline_settings, topic, dlq)

    result = run_pipeline_to_a_full_disk("dlq", "inspect", dlq, "--output", "ndjson")

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "error: cannot write to stdout: No space left on device" in result.stderr


def test_redrive_sends_the_selected_and_their_followers_back_in_key_order_once(
    pipeline_settings, topic_with_dlq, consumer_group
):
    topic, dlq = topic_with_dlq
    events = scenario(pipeline_settings, topic, dlq)

    result = run_pipeline("dlq", "redrive", topic, "--reason", "retries_exhausted", "--yes")

    assert result.returncode == 0, result.stderr
    assert "4 dead letters of 2 keys" in result.stderr
    assert "2 matched, 2 later ones of the same keys added" in result.stderr
    sent = read_topic(pipeline_settings, topic, consumer_group)
    assert len(sent) == 4
    by_key = defaultdict(list)
    for message in sent:
        by_key[message.key()].append(message)
    assert set(by_key) == {b"a", b"c"}  # b's schema error did not match
    for key, names in ((b"a", ["a1", "a2", "a3"]), (b"c", ["c1"])):
        messages = by_key[key]
        assert len({m.partition() for m in messages}) == 1  # one key, one partition
        assert [decode(m.value(), m.headers(), m.key()) for m in messages] == [
            events[name] for name in names
        ]  # original key, value and ce_* attributes, in per-key order
        headers = [dict(m.headers()) for m in messages]
        assert [h[REDRIVE_LAST] for h in headers] == [b"false"] * (len(names) - 1) + [b"true"]
        assert all(h[REDRIVE_OF].startswith(f"{dlq}:".encode()) for h in headers)
    assert len({dict(m.headers())[REDRIVE_ID] for m in sent}) == 1

    again = run_pipeline("dlq", "redrive", topic, "--yes")  # no filter: only b is left

    assert again.returncode == 0, again.stderr
    after = read_topic(pipeline_settings, topic, consumer_group + "-2")
    assert [m.key() for m in after].count(b"b") == 1 and len(after) == 5

    third = run_pipeline("dlq", "redrive", topic, "--yes")

    assert third.returncode == 0, third.stderr
    assert f"nothing to redrive in {dlq} (0 pending)" in third.stderr
    assert len(read_topic(pipeline_settings, topic, consumer_group + "-3")) == 5
    shown = run_pipeline("dlq", "inspect", topic, "-o", "ndjson", "--show-redriven")
    listed = ndjson(shown)
    assert len(listed) == 5 and all(record["redriven"] for record in listed)
    # Of every dead letter, not "5 shown of 0 pending".
    assert f"5 dead letters shown of 5 (0 pending) in {dlq}" in shown.stderr


def test_redrive_dry_run_shows_the_count_and_sends_nothing(
    pipeline_settings, topic_with_dlq, consumer_group
):
    topic, dlq = topic_with_dlq
    scenario(pipeline_settings, topic, dlq)

    result = run_pipeline("dlq", "redrive", dlq, "--key", "a", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "3 dead letters of 1 key" in result.stderr and "dry run: nothing sent" in result.stderr
    # Each dead letter that would go back, in its order (only counts were shown): key a's
    # events were at offsets 100, 102 and 104 of the original topic.
    originals = [f"[1]@{offset}" in result.stdout for offset in range(100, 105)]
    assert originals == [True, False, True, False, True], result.stdout
    rows = [result.stdout.index(f"[1]@{offset}") for offset in (100, 102, 104)]
    assert rows == sorted(rows)
    assert read_topic(pipeline_settings, topic, consumer_group) == []
    assert len(ndjson(run_pipeline("dlq", "inspect", topic, "-o", "ndjson"))) == 5


def test_an_older_redrive_is_fenced_and_its_open_transaction_never_becomes_visible(
    pipeline_settings, topic_with_dlq, consumer_group
):
    topic, dlq = topic_with_dlq
    events = scenario(pipeline_settings, topic, dlq)
    # An "older redrive" of the same dead-letter topic, in the middle of its transaction.
    items = [
        read_dead_letter(dlq, m.partition(), m.offset(), m.key(), m.value(), m.headers())
        for m in read_topic(pipeline_settings, dlq, consumer_group + "-dlq")
    ]
    older = build_event_producer(
        pipeline_settings.kafka,
        pipeline_settings.producer,
        transactional_id=redrive_transactional_id(dlq),
    )
    older.init_transactions()
    transaction = older.transaction()
    transaction.__enter__()
    for letter in items:
        older.send(topic, redrive_message(letter, redrive_id="older", last_of_key=True))
        older.send(dlq, redriven_marker(letter))
    older.poll(1.0)

    result = run_pipeline("dlq", "redrive", topic, "--yes")

    assert result.returncode == 0, result.stderr
    with pytest.raises(Exception, match=r"(?i)fenced|epoch"):
        transaction.__exit__(None, None, None)  # the older one can commit nothing any more
    sent = read_topic(pipeline_settings, topic, consumer_group)
    assert sorted(decode(m.value(), m.headers(), m.key()).id for m in sent) == sorted(
        e.id for e in events.values()
    )  # each exactly once, none from the older run
    assert {dict(m.headers())[REDRIVE_ID] for m in sent} != {b"older"}


def test_an_unknown_topic_is_one_line_and_exit_2(unique_name, pipeline_stack):
    missing = unique_name("nothing")

    for command in ("inspect", "redrive"):
        result = run_pipeline(
            "dlq", command, missing, "--yes" if command == "redrive" else "--output=table"
        )

        assert result.returncode == 2
        assert said(result.stderr) == [
            f"error: dead-letter topic {missing}.dlq does not exist on Kafka at 127.0.0.1:9092, "
            f"nor {missing} (is {missing} a topic of yours? `pipeline topics apply` creates the "
            "catalogue's topics with their .dlq)"
        ]
        assert "Traceback" not in result.stderr


def test_a_topic_without_a_dead_letter_topic_and_an_empty_name_are_said_so(new_topic):
    topic = new_topic(partitions=1, prefix="nodlq")

    result = run_pipeline("dlq", "inspect", topic)
    nameless = run_pipeline("dlq", "inspect", ".dlq")

    assert result.returncode == nameless.returncode == 2
    assert said(result.stderr) == [
        f"error: {topic} has no dead-letter topic on Kafka at 127.0.0.1:9092 ({topic}.dlq does "
        "not exist): declare it in your catalogue and run `pipeline topics apply` (a processor "
        "dead-letters to it)"
    ]
    assert said(nameless.stderr) == [
        "error: .dlq names no topic: give the topic (requests.orders) or its dead-letter topic "
        "(requests.orders.dlq)"
    ]


def test_an_unknown_reason_is_a_usage_error(unique_name, pipeline_stack):
    result = run_pipeline("dlq", "inspect", unique_name("x"), "--reason", "bogus")

    assert result.returncode == 2
    assert "is not a reason" in result.stderr


def test_a_bad_since_is_one_line_and_exit_2(unique_name, pipeline_stack):
    for command in ("inspect", "redrive", "discard"):
        note = ["--note", "n"] if command == "discard" else []
        result = run_pipeline("dlq", command, unique_name("x"), *note, "--since", "yesterday")

        assert result.returncode == 2
        assert said(result.stderr) == [
            "error: Invalid value: --since 'yesterday': expected a duration such as 15m, 2h, "
            "1d, 1h30m or an ISO 8601 time such as 2024-07-15T12:00:00Z "
            f"(see pipeline dlq {command} -h)"
        ]
