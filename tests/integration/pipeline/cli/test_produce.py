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
from collections import Counter, defaultdict
from pathlib import Path

from confluent_kafka import TopicPartition, murmur2

from pipeline.clients import build_consumer
from pipeline.envelope import decode_message
from tests.support.stack_cli import PIPELINE, run_pipeline

ORDER = {
    "order_id": "order-1",
    "customer_id": "customer-1",
    "lines": [{"sku": "sku-1", "quantity": 2, "unit_price": "12.50"}],
}


def read_topic(settings, topic, group):
    """Every message in ``topic``, up to the end offsets seen now, in per-partition order."""
    consumer = build_consumer(settings.kafka, group)
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            ends[partition] = high - low
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages = []
        while len(messages) < sum(ends.values()):
            messages.extend(m for m in consumer.consume(500, timeout=0.5) if m.error() is None)
        return messages
    finally:
        consumer.close()


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
    messages = read_topic(pipeline_settings, topic, consumer_group)
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
    assert read_topic(pipeline_settings, topic, consumer_group) == []


def test_strict_with_a_clean_input_sends_everything_and_exits_0(
    pipeline_settings, new_topic, consumer_group, tmp_path
):
    topic = new_topic(partitions=2)
    source = write_lines(tmp_path / "in.ndjson", [json.dumps({"id": f"k{n}"}) for n in range(20)])

    result = run_pipeline("produce", topic, str(source), "--key", "id", "--strict")

    assert result.returncode == 0, result.stderr
    assert len(read_topic(pipeline_settings, topic, consumer_group)) == 20
    assert not (tmp_path / "in.ndjson.rejects.ndjson").exists()


def test_an_unknown_topic_is_a_one_line_error_with_exit_code_2(
    pipeline_settings, unique_name, tmp_path
):
    source = write_lines(tmp_path / "in.ndjson", ['{"id": "a"}'])
    missing = unique_name("missing")

    result = run_pipeline("produce", missing, str(source), "--key", "id")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
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
    assert [m.key() for m in read_topic(pipeline_settings, topic, consumer_group)] == [b"a", b"b"]


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
    events = [decode_message(m) for m in read_topic(pipeline_settings, topic, consumer_group)]
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
