"""Static membership (``processing.group_instance_id``, KIP-345): a processor killed with SIGKILL
and started again under the same instance id gets its partitions back at once, without the
group waiting for the dead member's session to end; without an instance id it waits that long.
"""

from __future__ import annotations

from tests.support.processor_runs import (
    ProcessorProcess,
    effect_event,
    effects_database,
    effects_env,
    produce,
)

#: Far longer than the waits below: a group that waited for the dead member would fail them.
SESSION_TIMEOUT_S = 120
#: How long the restarted instance may take to handle a new event (start and join included).
WITHIN_S = 60


def test_a_killed_static_member_started_again_gets_its_partitions_back_at_once(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic = new_topic(partitions=2, prefix="effects")
    new_topic(partitions=1, name=f"{topic}.dlq")
    database = effects_database(postgres_url)
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        PIPELINE_PROCESSING__GROUP_INSTANCE_ID="member-a",
        PIPELINE_PROCESSING__SESSION_TIMEOUT_S=SESSION_TIMEOUT_S,
    )
    first = ProcessorProcess(env, tmp_path / "first.log")
    again = None
    try:
        produce(pipeline_settings, topic, [effect_event("k1", 0), effect_event("k2", 0)])
        first.settled_summary(processed=2, timeout_s=WITHIN_S)
        first.kill()

        again = ProcessorProcess(env, tmp_path / "again.log")
        produce(pipeline_settings, topic, [effect_event("k1", 1), effect_event("k2", 1)])

        settled = again.settled_summary(processed=2, timeout_s=WITHIN_S)
    finally:
        for process in (first, again):
            if process is not None:
                process.stop_quietly()
        database.dispose()

    assert settled.lag == 0
    assert "assigned" in again.log(), again.tail()
