"""Events from CloudEvents producers this project did not write are all processed.

Kafka's own Java console producer (from the Kafka jars the stack runs) writes binary-mode
events with only the required headers (no ``ce_time``), one with JSON data and one with text;
the official Python SDK writes structured mode (``application/cloudevents+json``, JSON data and
``data_base64`` bytes; and its classic API's form) and a binary-mode event with raw bytes. A
real processor (``pipeline process``) handles every one of them and dead-letters none, and
``pipeline consume`` prints each as the same event, without an error.
"""

from __future__ import annotations

import base64
import json
import subprocess
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from sqlalchemy import create_engine, select

from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.settings import PipelineSettings
from pipeline.stack.preflight import StackError, find_java
from pipeline.topics.catalogue import dlq_name
from tests.support.interop_processor import interop_metadata, seen_events
from tests.support.processor_runs import ProcessorProcess, effects_env, wait_until
from tests.support.stack_cli import run_pipeline

SPEC = "tests.support.interop_processor:processor"
CONSOLE_PRODUCERS = ("org.apache.kafka.tools.ConsoleProducer", "kafka.tools.ConsoleProducer")
REQUIRED = "ce_specversion:1.0,ce_source:/console,ce_type:com.example.console"


def _kafka_libs(settings: PipelineSettings) -> Path:
    stack = settings.stack
    libs = (stack.dist_dir or stack.home / "dist") / f"kafka-{stack.kafka_version}" / "libs"
    if not any(libs.glob("kafka-clients-*.jar")):
        pytest.skip(f"no Kafka jars in {libs} (`pipeline stack up` fetches them)")
    return libs


def _console_producer_class(libs: Path) -> str:
    """The console producer's main class in these jars (it moved between Kafka versions)."""
    for name in CONSOLE_PRODUCERS:
        entry = name.replace(".", "/") + ".class"
        for jar in libs.glob("kafka*.jar"):
            with zipfile.ZipFile(jar) as archive:
                if entry in archive.namelist():
                    return name
    raise AssertionError(f"no console producer class in {libs}")


def console_produce(settings: PipelineSettings, topic: str, lines: list[str]) -> None:
    """Write ``lines`` (``headers<TAB>key<TAB>value``) with Kafka's console producer."""
    libs = _kafka_libs(settings)
    try:
        java = find_java()
    except StackError as error:
        pytest.skip(f"no Java: {error}")
    command = [
        str(java.executable),
        "-cp",
        str(libs / "*"),
        _console_producer_class(libs),
        "--bootstrap-server",
        settings.kafka.bootstrap_servers,
        "--topic",
        topic,
        "--property",
        "parse.headers=true",
        "--property",
        "parse.key=true",
    ]
    done = subprocess.run(
        command, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]


def sdk_messages() -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]], tuple]]:
    """Messages the official SDK writes, each with the row the processor should record."""
    core = pytest.importorskip("cloudevents.core.bindings.kafka")
    v1 = pytest.importorskip("cloudevents.core.v1.event")
    try:
        from cloudevents import http, kafka  # type: ignore[attr-defined]
    except ImportError:
        from cloudevents.v1 import http, kafka
    raw = b"\x00\x01\xfe\xff raw"
    made = []

    structured_json = v1.CloudEvent(
        attributes={
            "id": "sdk-structured-json",
            "source": "https://example.com/sdk",
            "type": "com.example.sdk",
            "time": datetime(2024, 1, 1, tzinfo=UTC),
            "partitionkey": "s1",
        },
        data={"total": 3},
    )
    message = core.to_structured_event(structured_json)
    made.append((message, ("sdk-structured-json", "application/json", True, "s1", '{"total": 3}')))

    structured_bytes = v1.CloudEvent(
        attributes={
            "id": "sdk-structured-bytes",
            "source": "/sdk",
            "type": "com.example.sdk",
            "datacontenttype": "application/octet-stream",
        },
        data=raw,
    )
    message = core.to_structured_event(structured_bytes)
    row = ("sdk-structured-bytes", "application/octet-stream", True, None, _bytes(raw))
    made.append((message, row))

    binary_bytes = v1.CloudEvent(
        attributes={
            "id": "sdk-binary-bytes",
            "source": "/sdk",
            "type": "com.example.sdk",
            "datacontenttype": "application/octet-stream",
        },
        data=raw,
    )
    message = core.to_binary_event(binary_bytes)
    made.append(
        (message, ("sdk-binary-bytes", "application/octet-stream", True, None, _bytes(raw)))
    )

    classic = http.CloudEvent.create(
        {"id": "sdk-classic-structured", "source": "/sdk", "type": "com.example.sdk"}, {"a": [1]}
    )
    message = kafka.to_structured(classic)
    made.append((message, ("sdk-classic-structured", "application/json", True, None, '{"a": [1]}')))

    return [
        (
            message.key.encode() if isinstance(message.key, str) else message.key,
            message.value,
            list(message.headers.items()),
            row,
        )
        for message, row in made
    ]


def _bytes(raw: bytes) -> str:
    return "bytes:" + base64.b64encode(raw).decode("ascii")


def _end_offsets(settings: PipelineSettings, topic: str, partitions: int) -> int:
    consumer = build_consumer(settings.kafka, f"watch-{topic}")
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()


def test_events_from_the_console_producer_and_the_sdk_are_all_processed_none_dead_lettered(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic = new_topic(partitions=2, prefix="interop")
    new_topic(partitions=1, name=dlq_name(topic))
    console_lines = [
        f"{REQUIRED},ce_id:console-json,content-type:application/json\tc1\t" + '{"n": 1}',
        f"{REQUIRED},ce_id:console-text,content-type:text/plain\tc2\thello from the console",
    ]
    expected = {
        ("console-json", "application/json", False, "c1", '{"n": 1}'),
        ("console-text", "text/plain", False, "c2", _bytes(b"hello from the console")),
    }
    console_produce(pipeline_settings, topic, console_lines)
    producer = build_producer(pipeline_settings.kafka)
    for key, value, headers, row in sdk_messages():
        producer.produce(topic, key=key, value=value, headers=headers)
        expected.add(row)
    assert producer.flush(60) == 0

    engine = create_engine(postgres_url)
    interop_metadata.create_all(engine)
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        INTEROP_TOPIC=topic,
        INTEROP_GROUP=consumer_group,
    )
    process = ProcessorProcess(env, tmp_path / "interop.log", spec=SPEC)
    try:

        def all_rows():
            process.assert_alive()
            with engine.connect() as connection:
                rows = connection.execute(
                    select(
                        seen_events.c.event_id,
                        seen_events.c.content_type,
                        seen_events.c.has_time,
                        seen_events.c.partitionkey,
                        seen_events.c.data,
                    )
                ).all()
            return rows if len(rows) >= len(expected) else None

        rows = wait_until(all_rows, timeout_s=120, what=f"{len(expected)} events handled")
        assert {tuple(row) for row in rows} == expected

        def summary_of_all():
            process.assert_alive()
            done = [s for s in process.summaries() if s.processed >= len(expected)]
            return done[0] if done else None

        summary = wait_until(summary_of_all, timeout_s=60, what="a metrics line counting all")
        assert (summary.processed, summary.dead_lettered) == (len(expected), 0), summary
        assert process.terminate() == 0, process.tail()
    finally:
        process.stop_quietly()
        engine.dispose()
    assert _end_offsets(pipeline_settings, dlq_name(topic), 1) == 0

    printed = run_pipeline("consume", topic, "--from-beginning", timeout=120)
    assert printed.returncode == 0, printed.stderr
    records = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [record for record in records if "error" in record] == []
    assert {record["id"] for record in records} == {row[0] for row in expected}
