"""A dead letter that can never succeed, discarded with ``pipeline dlq discard``, against a real
processor, Kafka and PostgreSQL.

Key D: d0 applied, d1 fails every time (dead-lettered, the key parked), nothing behind it.
Discarding d1 lets the key go in the processor's database: d2, produced after, is applied.

Key E: e1 fails every time, e2 and e3 are dead-lettered behind it (``key_parked``). Discarding e1
leaves the key parked (its tail is pending) and says how to redrive the tail; that redrive needs
no ``--out-of-order`` any more (e1 is no longer pending), applies e2 and e3 in order and lets the
key go: e4 is applied.

Key F: f1 fails, f2 and f3 behind it. Discarding f1 and f3 (the tail's last) leaves f2 pending;
its redrive lets the key go (the park's latest dead letter moves back to f2): f4 is applied.

Key G: g1 fails, g2 behind it. Discarding g2 first, then g1, lets the key go: g3 is applied.

The discarded letters stay in the dead-letter topic, shown as discarded with the note by
``inspect --show-redriven``, and a second discard or redrive finds nothing of them.
"""

from __future__ import annotations

import json
import uuid

from pipeline.envelope import KafkaMessage
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


def inspect(topic: str, *options: str) -> list[dict]:
    shown = run_pipeline("dlq", "inspect", topic, "--output", "ndjson", *options, timeout=120)
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def test_a_discarded_poison_letter_lets_its_key_go_and_a_parked_tail_is_redriven_in_order(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic = new_topic(partitions=PARTITIONS, prefix="effects")
    dlq = dlq_name(topic)
    new_topic(partitions=PARTITIONS, name=dlq)
    database = effects_database(postgres_url)
    marker = f"poison-{uuid.uuid4().hex[:8]}"
    d0, d1, d2 = effect_event("D", 0), effect_event("D", 1, poison=marker), effect_event("D", 2)
    e1 = effect_event("E", 1, poison=marker)
    e2, e3, e4 = effect_event("E", 2), effect_event("E", 3), effect_event("E", 4)
    f1, g1 = effect_event("F", 1, poison=marker), effect_event("G", 1, poison=marker)
    f2, f3, f4 = effect_event("F", 2), effect_event("F", 3), effect_event("F", 4)
    g2, g3 = effect_event("G", 2), effect_event("G", 3)
    produce(pipeline_settings, topic, [d0, d1, e1, e2, e3, f1, f2, f3, g1, g2])
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        EFFECTS_FAIL_MARKER=marker,
        PIPELINE_PROCESSING__RETRY__MAX_ATTEMPTS=2,
        PIPELINE_PROCESSING__RETRY__INITIAL_BACKOFF_S=0.05,
    )
    cli_env = {"PIPELINE_DATABASE__URL": postgres_url}
    processor = ProcessorProcess(env, tmp_path / "processor.log")
    try:
        wait_for_effects(database, 1, [processor])

        def nine_dead_letters():
            processor.assert_alive()
            letters = inspect(topic)
            return letters if len(letters) >= 9 else None

        letters = wait_until(nine_dead_letters, timeout_s=90, what="9 dead letters", every_s=1)
        assert sorted((letter["key"], letter["reason"]) for letter in letters) == [
            ("D", "retries_exhausted"),
            ("E", "key_parked"),
            ("E", "key_parked"),
            ("E", "retries_exhausted"),
            ("F", "key_parked"),
            ("F", "key_parked"),
            ("F", "retries_exhausted"),
            ("G", "key_parked"),
            ("G", "retries_exhausted"),
        ], letters

        # Key D: nothing behind d1; discarding it lets the key go.
        note = "d1 carries a card number we must not charge"
        gone = run_pipeline(
            "dlq", "discard", topic, "--event-id", d1.id, "--note", note, "--yes",
            env=cli_env, timeout=120,
        )  # fmt: skip
        assert gone.returncode == 0, gone.stderr
        assert "discarded 1 dead letter" in gone.stderr, gone.stderr
        assert f"key D of {topic}: let go (group {consumer_group})" in gone.stderr, gone.stderr
        produce(pipeline_settings, topic, [d2])
        wait_for_effects(database, 2, [processor])

        # Key E: its tail is pending, so the key stays parked; the output says how to go on.
        tail = run_pipeline(
            "dlq", "discard", topic, "--event-id", e1.id, "--note", "poison", "--yes",
            env=cli_env, timeout=120,
        )  # fmt: skip
        assert tail.returncode == 0, tail.stderr
        flat = " ".join(tail.stderr.split())
        assert f"key E of {topic}: 2 dead letters of it still pending" in flat, tail.stderr
        assert f"pipeline dlq redrive {dlq} --key E" in flat, tail.stderr
        pending_ids = {letter["event_id"] for letter in inspect(topic)}
        assert pending_ids == {e2.id, e3.id, f1.id, f2.id, f3.id, g1.id, g2.id}

        # The tail alone goes back without --out-of-order and lets the key go.
        sent = run_pipeline("dlq", "redrive", topic, "--key", "E", "--yes", timeout=120)
        assert sent.returncode == 0, sent.stderr
        assert "redriven 2 dead letters" in sent.stderr, sent.stderr
        wait_for_effects(database, 4, [processor])
        produce(pipeline_settings, topic, [e4])
        wait_for_effects(database, 5, [processor])

        # Key F: its head and its tail's last discarded, the middle redriven: the key goes.
        cut = run_pipeline(
            "dlq", "discard", topic, "--event-id", f1.id, "--event-id", f3.id,
            "--note", "f1 and f3 bad", "--yes", env=cli_env, timeout=120,
        )  # fmt: skip
        assert cut.returncode == 0, cut.stderr
        said = " ".join(cut.stderr.split())
        assert f"key F of {topic}: 1 dead letter of it still pending" in said, cut.stderr
        sent = run_pipeline("dlq", "redrive", topic, "--key", "F", "--yes", timeout=120)
        assert sent.returncode == 0, sent.stderr
        wait_for_effects(database, 6, [processor])
        produce(pipeline_settings, topic, [f4])
        wait_for_effects(database, 7, [processor])
        assert "stays parked" not in processor.log(), processor.tail()

        # Key G: its tail discarded first, then its head: the key goes.
        for reason, why in (("key_parked", "g2 first"), ("retries_exhausted", "then g1")):
            step = run_pipeline(
                "dlq", "discard", topic, "--key", "G", "--reason", reason, "--note", why,
                "--yes", env=cli_env, timeout=120,
            )  # fmt: skip
            assert step.returncode == 0, step.stderr
        assert f"key G of {topic}: let go" in " ".join(step.stderr.split()), step.stderr
        produce(pipeline_settings, topic, [g3])
        wait_for_effects(database, 8, [processor])
        problems = exactly_once_in_order_problems(
            effect_rows(database), [d0, d2, e2, e3, e4, f2, f4, g3]
        )
        assert not problems, "\n".join(problems)

        # Nothing pending; the discarded letters are kept, marked, with their note.
        assert inspect(topic) == []
        every = {letter["event_id"]: letter for letter in inspect(topic, "--show-redriven")}
        assert every[d1.id]["status"] == "discarded"
        assert every[d1.id]["discard_note"] == note
        assert every[e1.id]["status"] == "discarded"
        assert {every[e2.id]["status"], every[e3.id]["status"]} == {"redriven"}
        again = run_pipeline(
            "dlq", "discard", topic, "--key", "D", "--note", "again", "--yes",
            env=cli_env, timeout=120,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert "nothing to discard" in again.stderr, again.stderr
        assert processor.terminate() == 0, processor.tail()
    finally:
        processor.stop_quietly()


def test_discarding_a_letter_that_was_no_event_lets_its_key_go(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    # No ce_id to name it: the park row names it by its position, which discard used to miss
    # ("stays parked behind a dead letter of it not read yet"), leaving the key parked.
    topic = new_topic(partitions=1, prefix="effects")
    new_topic(partitions=1, name=dlq_name(topic))
    database = effects_database(postgres_url)
    produce(pipeline_settings, topic, [KafkaMessage(key=b"H", value=b'{"a": 1}', headers=[])])
    env = effects_env(topic=topic, group=consumer_group, database_url=postgres_url)
    processor = ProcessorProcess(env, tmp_path / "processor.log")
    try:
        wait_until(lambda: inspect(topic) or None, timeout_s=90, what="the dead letter", every_s=1)
        gone = run_pipeline(
            "dlq", "discard", topic, "--key", "H", "--reason", "undecodable", "--note", "junk",
            "--yes", env={"PIPELINE_DATABASE__URL": postgres_url}, timeout=120,
        )  # fmt: skip
        assert gone.returncode == 0, gone.stderr
        assert f"key H of {topic}: let go" in " ".join(gone.stderr.split()), gone.stderr
        after = effect_event("H", 0)
        produce(pipeline_settings, topic, [after])
        wait_for_effects(database, 1, [processor])
        assert not exactly_once_in_order_problems(effect_rows(database), [after])
        assert inspect(topic) == []  # applied, not dead-lettered as key_parked
    finally:
        processor.stop_quietly()
