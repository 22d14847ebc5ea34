"""``pipeline produce`` as a subprocess against the real broker: what lands in Kafka, and where.

Each test writes its NDJSON under ``tmp_path`` and produces into its own topic from ``new_topic``;
what arrived is read back with a plain consumer, independent of ``pipeline consume``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, TopicPartition, murmur2

from pipeline.envelope import Event, KafkaMessage, decode_message, encode
from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.kafka.producer import ProduceRefused, build_event_producer
from producers.ndjson import MAX_MESSAGE_BYTES, message_size
from tests.support.stack_cli import PIPELINE, run_pipeline, said

ORDER = {
    "order_id": "order-1",
    "customer_id": "customer-1",
    "lines": [{"sku": "sku-1", "quantity": 2, "unit_price": "12.50"}],
}


def read_topic(settings, topic, group, *, expected=None, timeout_s=30.0):
    """Every message in ``topic``, up to the end offsets seen now, in per-partition order.

    Reads until every partition reports its end (offsets also count transaction markers and
    aborted messages, which are never read); fails saying what it read if that takes more than
    ``timeout_s``, and if ``expected`` is given, unless exactly that many messages were read.
    """
    consumer = build_consumer(settings.kafka, group, **{"enable.partition.eof": True})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {
            partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            for partition in partitions
        }
        pending = {partition for partition, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
        messages = []
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() >= deadline:
                pytest.fail(
                    f"read {len(messages)} message(s) of {topic} in {timeout_s:g} s; partitions "
                    f"{sorted(pending)} did not reach their end offsets "
                    f"{ {p: ends[p][1] for p in sorted(pending)} }"
                )
            for message in consumer.consume(500, timeout=0.5):
                error, partition = message.error(), message.partition()
                end = ends[partition][1]
                if error is None and message.offset() < end:
                    messages.append(message)
                    if message.offset() + 1 >= end:
                        pending.discard(partition)
                elif error is not None and error.code() == KafkaError._PARTITION_EOF:
                    if message.offset() >= end:
                        pending.discard(partition)
                elif error is not None:
                    pytest.fail(f"reading {topic} failed: {error.str()}")
    finally:
        consumer.close()
    if expected is not None:
        assert len(messages) == expected, (
            f"expected {expected} message(s) in {topic}, read {len(messages)}"
        )
    return messages


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def summary_value(stderr: str, row: str) -> str:
    match = re.search(rf"{re.escape(row)}\s*│\s*(\S+)\s*│", stderr)
    assert match, f"no {row!r} row in:\n{stderr}"
    return match.group(1)


def test_good_lines_are_sent_and_bad_lines_rejected_with_their_line_numbers(
    pipeline_settings, new_topic, consumer_group, tmp_path
):
    topic = new_topic(partitions=3)
    source = write_lines(
        tmp_path / "events.ndjson",
        [
            '{"id": "a", "n": 1}',
            "{not json",
            "",
            '["a", "list"]',
            '{"id": "b", "n": 2}',
            '{"n": 3}',
            '{"id": "c", "n": 4}',
        ],
    )

    result = run_pipeline("produce", topic, str(source), "--key", "id", "-H", "tenant=acme")

    assert result.returncode == 1, result.stderr
    rejects = (tmp_path / "events.ndjson.rejects.ndjson").read_text(encoding="utf-8")
    assert [json.loads(line) for line in rejects.splitlines()] == [
        {
            "line": 2,
            "reason": "invalid JSON: Expecting property name enclosed in double quotes at column 2",
            "raw": "{not json",
        },
        {
            "line": 4,
            "reason": "expected a JSON object (the event's data), got a list",
            "raw": '["a", "list"]',
        },
        {"line": 6, "reason": "missing key $.id: no field 'id' in $", "raw": '{"n": 3}'},
    ]
    assert "rejected line 2: invalid JSON" in result.stderr
    assert summary_value(result.stderr, "sent (acknowledged)") == "3"
    assert summary_value(result.stderr, "rejected") == "3"
    assert summary_value(result.stderr, "failed") == "0"
    messages = read_topic(pipeline_settings, topic, consumer_group, expected=3)
    events = sorted((decode_message(m) for m in messages), key=lambda e: e.data["n"])
    assert [e.data for e in events] == [
        {"id": "a", "n": 1},
        {"id": "b", "n": 2},
        {"id": "c", "n": 4},
    ]
    assert {e.type for e in events} == {"com.example.event"}
    assert {e.source for e in events} == {"/pipeline/cli"}
    assert len({e.correlationid for e in events}) == 1
    for message in messages:
        assert message.partition() == murmur2(message.key(), 3)
        assert ("tenant", b"acme") in message.headers()


def test_strict_sends_nothing_when_any_line_is_rejected(
    pipeline_settings, new_topic, consumer_group, tmp_path
):
    topic = new_topic(partitions=2)
    lines = [json.dumps({"id": f"k{n}", "n": n}) for n in range(50)]
    lines[37] = '{"n": 37}'
    source = write_lines(tmp_path / "in.ndjson", lines)
    rejects = tmp_path / "bad.ndjson"

    result = run_pipeline(
        "produce", topic, str(source), "--key", "id", "--strict", "--rejects", str(rejects)
    )

    assert result.returncode == 1, result.stderr
    assert "--strict: nothing sent" in result.stderr
    assert [json.loads(line)["line"] for line in rejects.read_text().splitlines()] == [38]
    # The check read every line (it said 0), and sent nothing to any partition.
    assert summary_value(result.stderr, "lines read") == "50"
    assert f"checked for {topic} (--strict: nothing sent)" in result.stderr
    assert "sent per partition" not in result.stderr
    read_topic(pipeline_settings, topic, consumer_group, expected=0)


def test_strict_with_a_clean_input_sends_everything_and_exits_0(
    pipeline_settings, new_topic, consumer_group, tmp_path
):
    topic = new_topic(partitions=2)
    source = write_lines(tmp_path / "in.ndjson", [json.dumps({"id": f"k{n}"}) for n in range(20)])

    result = run_pipeline("produce", topic, str(source), "--key", "id", "--strict")

    assert result.returncode == 0, result.stderr
    read_topic(pipeline_settings, topic, consumer_group, expected=20)
    assert not (tmp_path / "in.ndjson.rejects.ndjson").exists()


def test_an_unknown_topic_is_a_one_line_error_with_exit_code_2(
    pipeline_settings, unique_name, tmp_path
):
    source = write_lines(tmp_path / "in.ndjson", ['{"id": "a"}'])
    missing = unique_name("missing")

    result = run_pipeline("produce", missing, str(source), "--key", "id")

    assert result.returncode == 2
    assert said(result.stderr) == [
        f"error: topic {missing} does not exist on Kafka at "
        f"{pipeline_settings.kafka.bootstrap_servers} (create it first, "
        "e.g. with `pipeline topics apply`)"
    ]


def test_an_envelope_header_is_refused_before_anything_is_sent(new_topic, tmp_path):
    topic = new_topic(partitions=1)
    source = write_lines(tmp_path / "in.ndjson", ['{"id": "a"}'])

    result = run_pipeline("produce", topic, str(source), "--header", "ce_type=x")

    assert result.returncode == 2
    assert result.stderr.startswith("error: --header 'ce_type' is a CloudEvents envelope header")


def test_stdin_is_read_and_its_rejects_go_to_the_working_directory(
    pipeline_settings, new_topic, consumer_group, tmp_path
):
    topic = new_topic(partitions=1)

    result = subprocess.run(
        [PIPELINE, "produce", topic, "-", "--key", "id"],
        input='{"id": "a"}\n42\n{"id": "b"}\n',
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )

    assert result.returncode == 1, result.stderr
    assert json.loads((tmp_path / "produce-rejects.ndjson").read_text()) == {
        "line": 2,
        "reason": "expected a JSON object (the event's data), got a number",
        "raw": "42",
    }
    messages = read_topic(pipeline_settings, topic, consumer_group, expected=2)
    assert [m.key() for m in messages] == [b"a", b"b"]


def test_request_type_lines_are_validated_and_keyed_by_the_types_key_field(
    pipeline_settings, new_topic, consumer_group, tmp_path
):
    topic = new_topic(partitions=3)
    source = write_lines(
        tmp_path / "orders.ndjson",
        [json.dumps(ORDER), json.dumps({**ORDER, "lines": []}), json.dumps(ORDER)],
    )

    result = run_pipeline("produce", topic, str(source), "--type", "place_order", "--any-topic")

    assert result.returncode == 1, result.stderr
    rejects = [json.loads(x) for x in (tmp_path / "orders.ndjson.rejects.ndjson").open()]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (
            2,
            "not a valid place_order: lines: "
            "List should have at least 1 item after validation, not 0",
        )
    ]
    messages = read_topic(pipeline_settings, topic, consumer_group, expected=2)
    events = [decode_message(m) for m in messages]
    assert [(e.type, e.partitionkey) for e in events] == [
        ("com.example.requests.place_order", "order-1")
    ] * 2
    assert events[0].data == {**ORDER, "currency": "EUR"}


def test_a_request_type_refuses_a_topic_that_is_not_its_own(new_topic, tmp_path):
    topic = new_topic(partitions=1)
    source = write_lines(tmp_path / "orders.ndjson", [json.dumps(ORDER)])

    result = run_pipeline("produce", topic, str(source), "--type", "place_order")

    assert result.returncode == 2
    assert f"place_order requests travel on requests.orders, not {topic}" in result.stderr


def test_100k_keyed_events_all_come_back_on_kafkas_partition_for_their_key_in_order(
    pipeline_settings, new_topic, tmp_path
):
    """The issue's "done when": produce with `pipeline produce`, consume with `pipeline consume`.

    5,000 keys, 20 events each in a shuffled interleaving, each line carrying its per-key
    sequence number. The partition of every key must be the one kcat's murmur2 partitioner and
    confluent_kafka.murmur2 (Java-compatible) pick, and every key's sequence must be 0..19 in
    consume order.
    """
    assert shutil.which("kcat"), "kcat is needed (scripts/ensure-debian-packages.sh kcat=kcat)"
    topic, kcat_topic = new_topic(partitions=6), new_topic(partitions=6, prefix="kcat")
    keys = [f"customer-{n:05d}" for n in range(5_000)]
    order = [key for key in keys for _ in range(20)]
    random.Random(20240601).shuffle(order)
    sequence: Counter[str] = Counter()
    with (tmp_path / "big.ndjson").open("w", encoding="utf-8") as out:
        for number, key in enumerate(order):
            out.write(json.dumps({"customer": key, "seq": sequence[key], "n": number}) + "\n")
            sequence[key] += 1

    produced = run_pipeline(
        "produce", topic, str(tmp_path / "big.ndjson"), "--key", "customer", timeout=900
    )
    assert produced.returncode == 0, produced.stderr[-3000:]
    assert summary_value(produced.stderr, "sent (acknowledged)") == "100,000"
    consumed = run_pipeline("consume", topic, "--from-beginning", timeout=900)
    assert consumed.returncode == 0, consumed.stderr[-3000:]

    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert len(records) == 100_000
    assert len({r["id"] for r in records}) == 100_000
    assert sorted(r["data"]["n"] for r in records) == list(range(100_000))
    partition_of: dict[str, set[int]] = defaultdict(set)
    seen: dict[str, list[int]] = defaultdict(list)
    last_offset: dict[int, int] = {}
    for record in records:
        assert record["key"] == record["data"]["customer"]
        assert record["offset"] > last_offset.get(record["partition"], -1)
        last_offset[record["partition"]] = record["offset"]
        partition_of[record["key"]].add(record["partition"])
        seen[record["key"]].append(record["data"]["seq"])
    assert all(len(partitions) == 1 for partitions in partition_of.values())
    assert all(sequence == list(range(20)) for sequence in seen.values())
    ours = {key: partitions.pop() for key, partitions in partition_of.items()}

    bootstrap = pipeline_settings.kafka.bootstrap_servers
    subprocess.run(
        [
            "kcat",
            "-P",
            "-b",
            bootstrap,
            "-t",
            kcat_topic,
            "-K:",
            "-X",
            "partitioner=murmur2_random",
        ],
        input="".join(f"{key}:{key}\n" for key in keys),
        text=True,
        check=True,
        capture_output=True,
        timeout=300,
    )
    read = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", kcat_topic, "-e", "-q", "-f", "%k %p\n"],
        text=True,
        check=True,
        capture_output=True,
        timeout=300,
    )
    kcat = {key: int(p) for key, p in (line.split() for line in read.stdout.splitlines())}

    assert len(kcat) == 5_000
    assert ours == kcat
    assert ours == {key: murmur2(key.encode(), 6) for key in keys}


def test_a_line_too_large_for_kafka_is_rejected_with_its_line_number_and_the_rest_is_sent(
    pipeline_settings, new_topic, consumer_group, tmp_path
):
    topic = new_topic(partitions=2)
    big = json.dumps({"id": "big", "pad": "x" * 1_100_000})  # ~1.1 MB: over message.max.bytes
    source = write_lines(tmp_path / "in.ndjson", ['{"id": "a"}', big, '{"id": "b"}'])

    result = run_pipeline("produce", topic, str(source), "--key", "id")

    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    rejects = [json.loads(line) for line in (tmp_path / "in.ndjson.rejects.ndjson").open()]
    assert [(r["line"], r["raw"]) for r in rejects] == [(2, big)]
    assert rejects[0]["reason"].startswith(
        "refused by the Kafka client: Unable to produce message: Broker: Message size too large ("
    )
    assert "rejected line 2: refused by the Kafka client" in result.stderr
    assert summary_value(result.stderr, "sent (acknowledged)") == "2"
    assert summary_value(result.stderr, "rejected") == "1"
    assert summary_value(result.stderr, "failed") == "0"
    messages = read_topic(pipeline_settings, topic, consumer_group, expected=2)
    assert sorted(m.key() for m in messages) == [b"a", b"b"]


def test_an_event_over_the_topics_own_limit_fails_alone_and_its_neighbours_are_delivered(
    pipeline_settings, new_topic, consumer_group, tmp_path
):
    # The broker checks max.message.bytes against a whole batch and refuses it whole; produce
    # keeps its batches under the topic's limit, so only the event over it fails.
    topic = new_topic(partitions=1, **{"max.message.bytes": "4000"})
    noise = random.Random(7)
    big = json.dumps({"id": "big", "pad": "".join(noise.choices("abcdefghij", k=6000))})
    lines = [json.dumps({"id": f"k{n}", "pad": "x" * 200}) for n in range(30)]
    source = write_lines(tmp_path / "in.ndjson", [*lines[:15], big, *lines[15:]])

    result = run_pipeline("produce", topic, str(source), "--key-field", "id")

    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    flat = " ".join(result.stderr.split())
    assert (
        f"failed line 16: Broker: Message size too large (topic {topic} takes at most 4,000 "
        "bytes: its max.message.bytes)"
    ) in flat, result.stderr
    assert summary_value(result.stderr, "sent (acknowledged)") == "30"
    assert summary_value(result.stderr, "failed") == "1"
    messages = read_topic(pipeline_settings, topic, consumer_group, expected=30)
    assert [m.key() for m in messages] == [f"k{n}".encode() for n in range(30)]


def test_strict_rejects_a_line_too_large_for_kafka_before_sending_anything(
    pipeline_settings, new_topic, consumer_group, tmp_path
):
    topic = new_topic(partitions=1)
    big = json.dumps({"id": "big", "pad": "x" * 1_100_000})
    source = write_lines(tmp_path / "in.ndjson", ['{"id": "a"}', big, '{"id": "b"}'])

    result = run_pipeline("produce", topic, str(source), "--key", "id", "--strict")

    assert result.returncode == 1, result.stderr[-3000:]
    assert "--strict: nothing sent" in result.stderr
    rejects = [json.loads(line) for line in (tmp_path / "in.ndjson.rejects.ndjson").open()]
    assert [r["line"] for r in rejects] == [2]
    assert rejects[0]["reason"].startswith("event too large: 1,1")
    read_topic(pipeline_settings, topic, consumer_group, expected=0)


def test_the_size_limit_of_the_strict_check_is_exactly_the_producers(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=1)
    empty = encode(Event(source="/test", type="com.example.test", data={"pad": ""}))
    padding = MAX_MESSAGE_BYTES - message_size(empty)

    def padded(extra: int) -> KafkaMessage:
        value = json.dumps({"pad": "x" * (padding + extra)}, separators=(",", ":")).encode()
        return KafkaMessage(empty.key, value, empty.headers)

    producer = build_event_producer(pipeline_settings.kafka, pipeline_settings.producer)
    assert message_size(padded(0)) == MAX_MESSAGE_BYTES
    producer.send_and_wait(topic, padded(0))
    with pytest.raises(ProduceRefused, match="Message size too large"):
        producer.send(topic, padded(1))
    producer.flush()
    read_topic(pipeline_settings, topic, consumer_group, expected=1)


def test_an_error_part_way_still_flushes_what_was_sent_prints_the_summary_and_exits_2(
    pipeline_settings, new_topic, consumer_group, tmp_path
):
    topic = new_topic(partitions=1)
    source = write_lines(
        tmp_path / "in.ndjson", ['{"id": "a"}', '{"id": "b"}', "{not json", '{"id": "c"}']
    )
    unwritable = Path("/dev/full")  # opens, and every write fails (a full disk)

    result = run_pipeline(
        "produce", topic, str(source), "--key", "id", "--rejects", str(unwritable)
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert summary_value(result.stderr, "lines read") == "3"
    assert summary_value(result.stderr, "sent (acknowledged)") == "2"
    assert summary_value(result.stderr, "failed") == "0"
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: stopped at line 3: cannot write the rejects file {unwritable}: "
        "No space left on device"
    )
    messages = read_topic(pipeline_settings, topic, consumer_group, expected=2)
    assert [m.key() for m in messages] == [b"a", b"b"]


def test_delivery_failures_before_an_error_part_way_are_counted_and_exit_3(new_topic, tmp_path):
    # The broker refuses every event of this topic (its limit is below any event's size), so
    # each event queued fails; the rejects file on a full disk then stops the run at line 3.
    topic = new_topic(partitions=1, **{"max.message.bytes": "100"})
    source = write_lines(
        tmp_path / "in.ndjson", ['{"id": "a"}', '{"id": "b"}', "{not json", '{"id": "c"}']
    )
    unwritable = Path("/dev/full")  # opens, and every write fails (a full disk)

    result = run_pipeline(
        "produce", topic, str(source), "--key", "id", "--rejects", str(unwritable)
    )

    assert result.returncode == 3, result.stderr
    assert summary_value(result.stderr, "sent (acknowledged)") == "0"
    assert summary_value(result.stderr, "failed") == "2"
    assert "failed line 1: Broker: Message size too large" in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-2:] == [
        "2 events failed to be delivered",
        f"error: stopped at line 3: cannot write the rejects file {unwritable}: "
        "No space left on device",
    ]


# --- the read_topic helper ----------------------------------------------------------------------


def test_read_topic_skips_transaction_markers_and_aborted_messages(
    pipeline_settings, new_topic, consumer_group, unique_name
):
    """Offsets count markers and aborted messages too: reading to a count of offsets never ends."""
    topic = new_topic(partitions=1)
    producer = build_producer(pipeline_settings.kafka, **{"transactional.id": unique_name("tx")})
    producer.init_transactions(30)
    for value, commit in [(b"kept", True), (b"aborted", False), (b"also kept", True)]:
        producer.begin_transaction()
        producer.produce(topic, value=value)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    messages = read_topic(pipeline_settings, topic, consumer_group, expected=2, timeout_s=60)

    assert [m.value() for m in messages] == [b"kept", b"also kept"]


def test_read_topic_fails_with_what_it_read_when_its_deadline_passes(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=1)
    producer = build_producer(pipeline_settings.kafka)
    producer.produce(topic, value=b"one")
    assert producer.flush(30) == 0

    with pytest.raises(pytest.fail.Exception) as failure:
        read_topic(pipeline_settings, topic, consumer_group, timeout_s=0)

    assert str(failure.value) == (
        f"read 0 message(s) of {topic} in 0 s; partitions [0] did not reach their end offsets "
        "{0: 1}"
    )


def test_read_topic_says_how_many_it_read_when_the_count_is_not_the_expected_one(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=1)

    with pytest.raises(AssertionError, match=rf"expected 1 message\(s\) in {topic}, read 0"):
        read_topic(pipeline_settings, topic, consumer_group, expected=1)
