"""``--start latest`` (PIPELINE_PROCESSING__START=latest) keeps where a new group started: a
processor killed before its first commit, then started again, handles what came in between
(it used to start at the end again, and those events were never handled)."""

from __future__ import annotations

from confluent_kafka.admin import NewPartitions

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


def test_a_new_group_starting_at_the_end_killed_before_its_first_commit_loses_nothing(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic = new_topic(partitions=3, prefix="effects")
    new_topic(partitions=3, name=f"{topic}.dlq")
    database = effects_database(postgres_url)
    before = [effect_event(f"b{n}", 0) for n in range(3)]
    produce(pipeline_settings, topic, before)
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        PIPELINE_PROCESSING__START="latest",
    )

    first = ProcessorProcess(env, tmp_path / "first.log")
    try:
        wait_until(
            lambda: "(its end)" in first.log() or None,
            timeout_s=60,
            what="the start noted",
            every_s=0.2,
        )
        first.kill()  # before the group joined or committed anything
    finally:
        first.stop_quietly()
    after = [effect_event(f"a{n}", 0) for n in range(4)]
    produce(pipeline_settings, topic, after)

    second = ProcessorProcess(env, tmp_path / "second.log")
    try:
        wait_for_effects(database, len(after), [second])
        assert not exactly_once_in_order_problems(effect_rows(database), after)
        assert second.terminate() == 0, second.tail()
    finally:
        second.stop_quietly()


def test_partitions_added_to_a_group_that_started_at_the_end_are_read_from_their_beginning(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path, kafka_admin
):
    # Its commits on the first partitions made them look old: with "latest", the partition
    # added later was started at its end, and what was written to it meanwhile was skipped.
    topic = new_topic(partitions=1, prefix="effects")
    new_topic(partitions=1, name=f"{topic}.dlq")
    database = effects_database(postgres_url)
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        PIPELINE_PROCESSING__START="latest",
    )
    first_events = [effect_event("f0", 0)]
    first = ProcessorProcess(env, tmp_path / "first.log")
    try:
        wait_until(lambda: "(its end)" in first.log() or None, timeout_s=60, what="the start")
        produce(pipeline_settings, topic, first_events)
        wait_for_effects(database, 1, [first])
        assert first.terminate() == 0, first.tail()
    finally:
        first.stop_quietly()
    kafka_admin.create_partitions([NewPartitions(topic, 3)])[topic].result(30)
    wait_until(
        lambda: (
            len(kafka_admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3 or None
        ),
        timeout_s=30,
        what="3 partitions",
    )
    later = [effect_event(f"k{n}", 0) for n in range(12)]  # some on the new partitions
    produce(pipeline_settings, topic, later)

    second = ProcessorProcess(env, tmp_path / "second.log")
    try:
        wait_for_effects(database, 1 + len(later), [second])
        assert not exactly_once_in_order_problems(effect_rows(database), first_events + later)
        assert "(its start)" in second.log(), second.tail()
        assert second.terminate() == 0, second.tail()
    finally:
        second.stop_quietly()
