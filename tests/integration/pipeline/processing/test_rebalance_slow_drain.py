"""A rebalance while a handler call outlasts the drain: what the processor's log says.

One `pipeline process` instance is in the middle of a 15 s handler call when a second one joins
the group. aiokafka's rebalances are eager, so the first revokes every partition and drains:
with ``session_timeout_s`` 6 its drain gives up after 0.85 x 6 = 5.1 s, before Faust's flight
recorder (0.95 x 6 = 5.7 s) would log "Warning: Task timed out!" and a stack trace of a
revocation that is not hung. The log then has one INFO line per assignment and per revocation,
the processor's own warning saying the event's offset is not committed and its effects may
still commit, no aiokafka "Heartbeat failed ... because it is rebalancing" WARNING, and the
tallies at the stop count the one effect committed, once.
"""

from __future__ import annotations

import re

from pipeline.topics.catalogue import dlq_name
from tests.support.processor_runs import (
    ProcessorProcess,
    effect_event,
    effects_count,
    effects_database,
    effects_env,
    inbox_count,
    produce,
    wait_until,
)

PARTITIONS = 2
HANDLER_MS = 15_000


def test_a_drain_that_gives_up_says_so_once_in_the_processors_own_words(
    pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic = new_topic(partitions=PARTITIONS, prefix="fx-rebal")
    new_topic(partitions=PARTITIONS, name=dlq_name(topic))
    database = effects_database(postgres_url)
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        EFFECTS_SLEEP_MS=HANDLER_MS,
        PIPELINE_PROCESSING__SESSION_TIMEOUT_S=6,
        PIPELINE_PROCESSING__DRAIN_TIMEOUT_S=10,
    )
    processes: list[ProcessorProcess] = []
    try:
        a = ProcessorProcess(env, tmp_path / "a.log")
        processes.append(a)

        def a_assigned() -> bool:
            a.assert_alive()
            return f"assigned {topic}[0,1] (2 partitions)" in a.log()

        wait_until(a_assigned, timeout_s=90, what="the first instance's assignment line")
        produce(pipeline_settings, topic, [effect_event("slow", 0)])

        def a_handling() -> bool:
            lines = a.summaries()
            return bool(lines) and lines[-1].in_flight == 1

        wait_until(a_handling, timeout_s=60, what="the first instance to start the slow event")
        b = ProcessorProcess(env, tmp_path / "b.log")
        processes.append(b)

        def a_revoked() -> bool:
            a.assert_alive()
            return "still running after" in a.log() and f"revoked {topic}[0,1]" in a.log()

        wait_until(a_revoked, timeout_s=90, what="the first instance's drain to give up")

        def settled() -> bool:
            for process in processes:
                process.assert_alive()
            return effects_count(database) == 1 and inbox_count(database, consumer_group) == 1

        wait_until(settled, timeout_s=60, what="the slow event's effect")
        for process in processes:
            assert process.terminate() == 0, process.tail()
    finally:
        for process in processes:
            process.stop_quietly()

    log_a = a.log()
    assert "Task timed out" not in log_a and "hanging before restart" not in log_a, log_a
    [drain] = [line for line in log_a.splitlines() if "still running after" in line]
    assert "1 event still running after 5.1 s of draining" in drain, drain
    assert "their offsets are not committed" in drain, drain
    assert "may still finish here and commit their effects" in drain, drain
    revoked = rf"revoked {re.escape(topic)}\[0,1\] \(2 partitions\) after draining 5\."
    assert re.search(revoked, log_a), log_a
    for process in processes:
        log = process.log()
        assert "Heartbeat failed" not in log, log
        assert re.search(rf"assigned {re.escape(topic)}\[\d\] \(1 partition\)", log), log
    assert effects_count(database) == 1
    # Every effect committed is counted, once, by the instances' tallies at the stop.
    stop_tallies = [process.summaries()[-1] for process in processes]
    assert sum(tally.processed for tally in stop_tallies) == 1, stop_tallies
