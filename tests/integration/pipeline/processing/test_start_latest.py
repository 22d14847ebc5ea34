"""``--start latest`` (PIPELINE_PROCESSING__START=latest) keeps where a new group started: a
processor killed before its first commit, then started again, handles what came in between
(it used to start at the end again, and those events were never handled)."""

from __future__ import annotations

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
            lambda: "partitions noted at their end offsets" in first.log() or None,
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
