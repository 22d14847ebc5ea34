"""A dead letter larger than its dead-letter topic takes: sent without its value, the partition
goes on, and a redrive reads the value back from the original topic (Kafka refused it for ever,
and the processor used to try again every 10 s, holding the partition's commits)."""

from __future__ import annotations

import base64
import json
import os
import uuid

from confluent_kafka import TopicPartition

from pipeline.kafka.clients import build_consumer
from pipeline.topics.catalogue import dlq_name
from tests.support.processor_runs import (
    ProcessorProcess,
    effect_event,
    effects_database,
    effects_env,
    produce,
    wait_for_effects,
    wait_until,
)
from tests.support.stack_cli import run_pipeline


def _letters(topic: str) -> list[dict]:
    shown = run_pipeline("dlq", "inspect", topic, "--output", "ndjson", timeout=120)
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def _redriven_value(settings, topic: str) -> bytes | None:
    """The value of the message on ``topic`` a redrive sent (its ``pipeline.redrive.id``)."""
    consumer = build_consumer(
        settings.kafka, f"read-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        while True:
            [message] = consumer.consume(1, timeout=30)
            assert message.error() is None, message.error()
            if any(name == "pipeline.redrive.id" for name, _ in message.headers() or []):
                return message.value()
    finally:
        consumer.close()


def test_a_dead_letter_too_large_for_its_topic_holds_nothing_and_is_redriven_whole(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic = new_topic(partitions=1, prefix="effects")
    new_topic(partitions=1, name=dlq_name(topic), **{"max.message.bytes": 20_000})
    database = effects_database(postgres_url)
    marker = f"huge-{uuid.uuid4().hex[:8]}"
    # Random text: lz4 would shrink repeated bytes below the limit (the broker checks a batch as
    # it is stored, compressed).
    pad = base64.b64encode(os.urandom(45_000)).decode()
    huge = effect_event("H", 0, poison=marker, pad=pad)
    after = [effect_event(f"k{n}", 0) for n in range(5)]
    produce(pipeline_settings, topic, [huge, *after])
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        EFFECTS_FAIL_MARKER=marker,
        PIPELINE_PROCESSING__RETRY__MAX_ATTEMPTS=1,
    )
    process = ProcessorProcess(env, tmp_path / "processor.log")
    try:
        wait_for_effects(database, len(after), [process])
        [letter] = wait_until(
            lambda: _letters(topic) or None, timeout_s=60, what="the dead letter", every_s=1
        )
        assert letter["value"] is None and letter["event_id"] == huge.id
        assert letter["value_omitted_bytes"] > 60_000
        assert "sent without its value" in process.log()
    finally:
        process.stop_quietly()

    redriven = run_pipeline("dlq", "redrive", topic, "--yes", timeout=120)

    assert redriven.returncode == 0, redriven.stderr
    value = _redriven_value(pipeline_settings, topic)
    assert value is not None and json.loads(value)["pad"] == pad
    assert len(value) == letter["value_omitted_bytes"]
