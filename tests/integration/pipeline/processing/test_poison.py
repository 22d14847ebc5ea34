"""Poison messages: dead-lettered with the reason, the rest goes on; a redrive after the fix.

On one topic: bytes that are no event (key A), an event whose data does not fit its handler's
model (key B), an event whose handler fails every time (key C), then good events of other keys
and later events of key C. The processor dead-letters the first three, parks key C (its later
events are dead-lettered as ``key_parked``, in order) and handles every other key. Then the
handler is fixed (the processor restarts without the failure), ``pipeline dlq redrive --key C``
sends key C back: its events are applied once each, in order, and the key is free again.

Run with synchronous handlers (``sync``) and with ``async def`` ones (``async``): these take the
group path first, and the per-record path (on the event loop) for retries and the redrive.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from confluent_kafka import TopicPartition

from pipeline.envelope import Event, KafkaMessage
from pipeline.kafka.clients import build_consumer
from pipeline.topics.catalogue import dlq_name
from tests.support.processor_runs import (
    ProcessorProcess,
    effect_event,
    effect_rows,
    effects_database,
    effects_env,
    exactly_once_in_order_problems,
    produce,
    wait_for_effects,
    wait_until,
)
from tests.support.stack_cli import run_pipeline

PARTITIONS = 3
GOOD_KEYS = 10
GOOD_PER_KEY = 5


def inspect(topic: str) -> list[dict]:
    """The pending dead letters of ``topic``, as `pipeline dlq inspect --output ndjson` shows."""
    shown = run_pipeline("dlq", "inspect", topic, "--output", "ndjson", timeout=120)
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def end_offsets(settings, topic: str) -> int:
    consumer = build_consumer(settings.kafka, f"watch-{uuid.uuid4().hex[:8]}")
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


@pytest.mark.parametrize("handler", ["sync", "async"])
def test_poison_messages_are_dead_lettered_and_a_fixed_key_is_redriven_in_order(
    handler, pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic = new_topic(partitions=PARTITIONS, prefix="effects")
    dlq = dlq_name(topic)
    new_topic(partitions=PARTITIONS, name=dlq)  # deleted after the test, like the topic
    database = effects_database(postgres_url)
    marker = f"poison-{uuid.uuid4().hex[:8]}"

    undecodable = KafkaMessage(key=b"A", value=b"{not json", headers=[])
    schema_invalid = Event(
        source="/test", type="EffectV2", partitionkey="B", data={"note": "no seq"}
    )
    c_before = effect_event("C", 0)
    c_poison = effect_event("C", 1, poison=marker)
    c_later = [effect_event("C", 2), effect_event("C", 3)]
    good = [effect_event(f"g{k}", seq) for seq in range(GOOD_PER_KEY) for k in range(GOOD_KEYS)]
    produce(pipeline_settings, topic, [undecodable, schema_invalid, c_before, c_poison])
    produce(pipeline_settings, topic, [*good[: len(good) // 2], *c_later, *good[len(good) // 2 :]])

    failing = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        EFFECTS_HANDLER=handler,
        EFFECTS_FAIL_MARKER=marker,
        PIPELINE_PROCESSING__RETRY__MAX_ATTEMPTS=3,
        PIPELINE_PROCESSING__RETRY__INITIAL_BACKOFF_S=0.05,
    )
    fixed = {**failing}
    del fixed["EFFECTS_FAIL_MARKER"]
    processes: list[ProcessorProcess] = []
    try:
        first = ProcessorProcess(failing, tmp_path / "failing.log")
        processes.append(first)
        wait_for_effects(database, len(good) + 1, [first])

        def five_dead_letters():
            first.assert_alive()
            letters = inspect(topic)
            return letters if len(letters) >= 5 else None

        letters = wait_until(five_dead_letters, timeout_s=90, what="5 dead letters", every_s=1)
        by_reason: dict[str, list[dict]] = {}
        for letter in letters:
            by_reason.setdefault(letter["reason"], []).append(letter)
        assert sorted(by_reason) == [
            "key_parked",
            "retries_exhausted",
            "schema_invalid",
            "undecodable",
        ], letters
        (bad_bytes,) = by_reason["undecodable"]
        assert (bad_bytes["key"], bad_bytes["value"]) == ("A", "{not json")
        assert bad_bytes["error_type"] == "pipeline.envelope.EnvelopeError"
        (invalid,) = by_reason["schema_invalid"]
        assert (invalid["key"], invalid["event_id"]) == ("B", schema_invalid.id)
        assert "ValidationError" in invalid["error_type"]
        assert "seq" in invalid["error_message"]
        (exhausted,) = by_reason["retries_exhausted"]
        assert (exhausted["key"], exhausted["event_id"]) == ("C", c_poison.id)
        assert exhausted["attempts"] == 3
        assert exhausted["error_type"].endswith("PoisonError"), exhausted["error_type"]
        assert exhausted["consumer_group"] == consumer_group
        parked = by_reason["key_parked"]
        assert [(p["key"], p["event_id"]) for p in parked] == [("C", e.id) for e in c_later]
        assert all(p["parked_by"] == c_poison.id for p in parked), parked
        assert all(letter["original_topic"] == topic for letter in letters)

        # Every other key was handled: each good event once, in order; key C up to the poison.
        rows = effect_rows(database)
        problems = exactly_once_in_order_problems(rows, [*good, c_before])
        assert not problems, "\n".join(problems)
        assert first.terminate() == 0, first.tail()
        # A run this short may end before the first periodic line: the one at stop is there.
        assert re.search(r" in flight, lag [\d,]+ \(at stop\)", first.log()), first.tail()
        summary = first.summaries()[-1]
        assert (summary.dead_lettered, summary.retries) == (5, 2), summary

        # The fix: the handler no longer fails; then key C goes back.
        second = ProcessorProcess(fixed, tmp_path / "fixed.log")
        processes.append(second)
        sent = run_pipeline("dlq", "redrive", topic, "--key", "C", "--yes", timeout=120)
        assert sent.returncode == 0, sent.stderr
        assert "redriven 3 dead letters" in sent.stderr, sent.stderr
        c_events = [c_before, c_poison, *c_later]
        wait_for_effects(database, len(good) + len(c_events), [second])
        rows = effect_rows(database)
        problems = exactly_once_in_order_problems(rows, [*good, *c_events])
        assert not problems, "\n".join(problems)
        assert sorted(letter["reason"] for letter in inspect(topic)) == [
            "schema_invalid",
            "undecodable",
        ]

        # A second redrive of key C has nothing to send.
        offsets = end_offsets(pipeline_settings, topic)
        again = run_pipeline("dlq", "redrive", topic, "--key", "C", "--yes", timeout=120)
        assert again.returncode == 0, again.stderr
        assert "nothing to redrive" in again.stderr, again.stderr
        assert end_offsets(pipeline_settings, topic) == offsets

        # Key C is no longer parked: its next event is applied as usual.
        c_next = effect_event("C", 4)
        produce(pipeline_settings, topic, [c_next])
        wait_for_effects(database, len(good) + len(c_events) + 1, [second])
        rows = effect_rows(database)
        problems = exactly_once_in_order_problems(rows, [*good, *c_events, c_next])
        assert not problems, "\n".join(problems)
        assert len(inspect(topic)) == 2
        assert second.terminate() == 0, second.tail()
        assert second.summaries()[-1].dead_lettered == 0
    finally:
        for process in processes:
            process.stop_quietly()
