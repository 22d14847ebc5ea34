"""A dead letter larger than its dead-letter topic takes: sent without its value, the partition
goes on, and a redrive reads the value back from the original topic (Kafka refused it for ever,
and the processor used to try again every 10 s, holding the partition's commits)."""

from __future__ import annotations

import base64
import json
import os
import uuid

from confluent_kafka import TopicPartition

from pipeline.kafka.clients import build_admin, build_consumer
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
from tests.support.stack_cli import run_pipeline, said


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


def _dead_letter_a_huge_event(
    settings, new_topic, postgres_url, consumer_group, tmp_path, *, keys: str = "H"
) -> tuple[str, str, dict]:
    """A processor dead-letters a huge event of each of ``keys`` (then handles five more): the
    topic, the events' padding and the first letter as ``dlq inspect`` shows it."""
    topic = new_topic(partitions=1, prefix="effects")
    new_topic(partitions=1, name=dlq_name(topic), **{"max.message.bytes": 20_000})
    database = effects_database(postgres_url)
    marker = f"huge-{uuid.uuid4().hex[:8]}"
    # Random text: lz4 would shrink repeated bytes below the limit (the broker checks a batch as
    # it is stored, compressed).
    pad = base64.b64encode(os.urandom(45_000)).decode()
    huges = [effect_event(key, 0, poison=marker, pad=pad) for key in keys]
    after = [effect_event(f"k{n}", 0) for n in range(5)]
    produce(settings, topic, [*huges, *after])
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
        letters = wait_until(
            lambda: ((found := _letters(topic)) and len(found) == len(keys) and found) or None,
            timeout_s=60,
            what="the dead letters",
            every_s=1,
        )
        # Keys are handled side by side: their letters come in either order.
        assert {letter["event_id"] for letter in letters} == {huge.id for huge in huges}
        for letter in letters:
            assert letter["value"] is None and letter["value_omitted_bytes"] > 60_000
        assert "sent without its value" in process.log()
    finally:
        process.stop_quietly()
    return topic, pad, letters[0]


def test_a_dead_letter_too_large_for_its_topic_holds_nothing_and_is_redriven_whole(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic, pad, letter = _dead_letter_a_huge_event(
        pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
    )

    looked = run_pipeline("dlq", "redrive", topic, "--dry-run", timeout=120)
    redriven = run_pipeline("dlq", "redrive", topic, "--yes", timeout=120)

    assert looked.returncode == 0, looked.stderr
    assert "1 dead letter sent without the event's value" in looked.stderr, looked.stderr
    assert "(checked: it can be)" in looked.stderr, looked.stderr
    assert redriven.returncode == 0, redriven.stderr
    value = _redriven_value(pipeline_settings, topic)
    assert value is not None and json.loads(value)["pad"] == pad
    assert len(value) == letter["value_omitted_bytes"]


def test_a_dead_letter_whose_original_is_gone_is_one_line_in_a_dry_run_and_a_redrive(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic, _pad, letter = _dead_letter_a_huge_event(
        pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
    )
    admin = build_admin(pipeline_settings.kafka)
    # Retention's doing, at once: the partition now starts past the huge event.
    cut = TopicPartition(topic, 0, letter["original_offset"] + 1)
    for future in admin.delete_records([cut]).values():
        future.result(30)

    looked = run_pipeline("dlq", "redrive", topic, "--dry-run", timeout=120)
    redriven = run_pipeline("dlq", "redrive", topic, "--yes", timeout=120)

    for result in (looked, redriven):
        assert result.returncode == 2, result.stderr
        [line] = said(result.stderr)[-1:]
        assert line.startswith("error: dead letter "), result.stderr
        assert "is not there any more" in line and "discard the letter" in line, line
        # The selection, then that line: no librdkafka log line about an offset reset.
        assert len(said(result.stderr)) == 2, result.stderr
        assert "the partition holds offsets from 1" in line, line


def test_a_dry_run_names_every_dead_letter_whose_original_is_gone(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    # The redrive stops at the first; the dry run named only that one, so each had to be
    # discarded and the dry run run again to find the next.
    topic, _pad, _first = _dead_letter_a_huge_event(
        pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path, keys="HJ"
    )
    admin = build_admin(pipeline_settings.kafka)
    cut = TopicPartition(topic, 0, 2)  # the two huge events are the topic's first two
    for future in admin.delete_records([cut]).values():
        future.result(30)

    looked = run_pipeline("dlq", "redrive", topic, "--dry-run", timeout=120)

    assert looked.returncode == 2, looked.stderr
    gone = [line for line in said(looked.stderr) if "is not there any more" in line]
    assert len(gone) == 2, looked.stderr
    assert gone[-1].startswith("error: ") and gone[-1].endswith("(2 such)"), gone[-1]


def test_a_dead_letter_whose_original_topic_was_deleted_says_so_at_once(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    # Each letter waited out the 30 s read timeout, then said only "could not be read". The dry
    # run checks what the redrive checks first, in its order: the topic the letters go back to.
    topic, _pad, _first = _dead_letter_a_huge_event(
        pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path, keys="HJ"
    )
    admin = build_admin(pipeline_settings.kafka)
    admin.delete_topics([topic])[topic].result(30)

    looked = run_pipeline("dlq", "redrive", topic, "--dry-run", timeout=120)
    redriven = run_pipeline("dlq", "redrive", topic, "--yes", timeout=120)

    for run in (looked, redriven):
        assert run.returncode == 2, run.stderr
        [error] = [line for line in said(run.stderr) if line.startswith("error: ")]
        assert error.startswith(f"error: cannot redrive to {topic}: no such topic"), error
        assert "within 30 s" not in run.stderr, run.stderr
