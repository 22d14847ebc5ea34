"""``pipeline consume --group G`` goes on from where the group was on every partition, also
those it printed nothing from."""

from __future__ import annotations

import json

from pipeline.envelope import Event
from pipeline.kafka.producer import build_event_producer
from tests.support.stack_cli import run_pipeline


def produce(settings, topic, count):
    """``count`` events over many keys; their ids."""
    producer = build_event_producer(settings.kafka, settings.producer)
    ids = []
    for n in range(count):
        event = Event(source="/test", type="com.example.test", partitionkey=f"k{n}", data={"n": n})
        producer.send(topic, event)
        ids.append(event.id)
    producer.flush()
    return ids


def printed_ids(result):
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["id"] for line in result.stdout.splitlines()]


def test_a_group_stopped_by_max_resumes_every_partition(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=6)
    sent = produce(pipeline_settings, topic, 30)

    first = printed_ids(
        run_pipeline("consume", topic, "--group", consumer_group, "--from-beginning", "--max", "5")
    )
    rest = printed_ids(run_pipeline("consume", topic, "--group", consumer_group, "--max", "100"))

    assert len(first) == 5
    assert sorted(first + rest) == sorted(sent)


def test_a_new_group_that_printed_nothing_goes_on_from_where_it_started(
    pipeline_settings, new_topic, consumer_group
):
    topic = new_topic(partitions=3)
    produce(pipeline_settings, topic, 6)

    first_run = run_pipeline("consume", topic, "--group", consumer_group)
    first = printed_ids(first_run)
    later = produce(pipeline_settings, topic, 9)
    second_run = run_pipeline("consume", topic, "--group", consumer_group, "--from-beginning")
    second = printed_ids(second_run)

    assert first == []
    assert f"group {consumer_group} starts its next run where this one stopped" in (
        first_run.stderr
    )
    assert sorted(second) == sorted(later)  # not the 6 before: the group resumed
    assert "the group resumes at its committed offsets" in second_run.stderr
