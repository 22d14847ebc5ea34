"""Processors join and leave one consumer group while events keep arriving.

Three `pipeline process` instances of the effects processor share a group on a topic of 6
partitions: two start, a third joins mid-stream, then one leaves (SIGTERM). Every rebalance
drains the revoked partitions; what the old owner did not commit the new owner reads again
and the inbox skips. Afterwards every event has exactly one effect, in its key's order.

Events arrive until both rebalances were seen, so that a loaded machine, where a processor
takes long to start, still has the third instance join and the first leave mid-stream (a fixed
run of arrivals could end before them), and a quiet one does not wait for more arrivals.

Run with synchronous handlers (``sync``) and with ``async def`` ones (``async``), whose first
attempts commit in groups: a drain then waits for groups being committed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from pipeline.kafka.clients import build_producer
from pipeline.topics.catalogue import dlq_name
from tests.support.processor_runs import (
    ProcessorProcess,
    effect_rows,
    effects_database,
    effects_env,
    exactly_once_in_order_problems,
    inbox_count,
    keyed_events,
    produce,
    wait_for_effects,
    wait_until,
)

KEYS = 60
#: Events arrive until both rebalances were seen, up to this many per key.
MAX_PER_KEY = 1_000
PARTITIONS = 6
#: Produced in chunks this big, this far apart.
CHUNK = 100
CHUNK_EVERY_S = 0.4


def _pids_with_effects(database) -> Counter[int]:
    return Counter(row[4] for row in effect_rows(database))


@pytest.mark.parametrize("handler", ["sync", "async"])
def test_processors_joining_and_leaving_mid_stream_apply_every_event_once_in_key_order(
    handler, pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    topic = new_topic(partitions=PARTITIONS, prefix="effects")
    dlq = dlq_name(topic)
    new_topic(partitions=PARTITIONS, name=dlq)  # deleted after the test, like the topic
    database = effects_database(postgres_url)
    events = keyed_events(KEYS, MAX_PER_KEY)
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        EFFECTS_HANDLER=handler,
        EFFECTS_SLEEP_MS=2,
        PIPELINE_PROCESSING__DRAIN_TIMEOUT_S=5,
    )

    produced_all = threading.Event()
    rebalances_seen = threading.Event()
    produced = 0  # events[:produced] are in Kafka
    failures: list[BaseException] = []

    def keep_producing() -> None:
        nonlocal produced
        try:
            kafka = build_producer(pipeline_settings.kafka)
            for start in range(0, len(events), CHUNK):
                if rebalances_seen.is_set():
                    break
                produce(pipeline_settings, topic, events[start : start + CHUNK], kafka)
                produced = min(start + CHUNK, len(events))
                time.sleep(CHUNK_EVERY_S)
            produced_all.set()
        except BaseException as error:  # reported by the test thread
            failures.append(error)

    producer = threading.Thread(target=keep_producing, name="producer", daemon=True)
    figures: dict[str, float] = {}
    processes: list[ProcessorProcess] = []
    try:
        producer.start()
        a = ProcessorProcess(env, tmp_path / "a.log")
        b = ProcessorProcess(env, tmp_path / "b.log")
        processes += [a, b]

        def both_working():
            a.assert_alive()
            b.assert_alive()
            return {a.pid, b.pid} <= set(_pids_with_effects(database))

        wait_until(both_working, timeout_s=90, what="both first instances to apply effects")
        assert not produced_all.is_set(), "all events arrived before the third instance joined"

        c = ProcessorProcess(env, tmp_path / "c.log")
        processes.append(c)

        def c_working():
            for process in processes:
                process.assert_alive()
            return _pids_with_effects(database)[c.pid] > 0

        wait_until(c_working, timeout_s=90, what="the third instance to get partitions")
        figures["join: start of the third to its first effect (s)"] = (
            time.monotonic() - c.started_at
        )

        left_at = time.monotonic()
        assert a.terminate() == 0, a.tail()
        figures["leave: SIGTERM to exit of the first (s)"] = time.monotonic() - left_at
        before = _pids_with_effects(database)

        def others_took_over():
            b.assert_alive()
            c.assert_alive()
            now = _pids_with_effects(database)
            return now[b.pid] > before[b.pid] and now[c.pid] > before[c.pid]

        wait_until(others_took_over, timeout_s=90, what="the two left to go on applying effects")
        figures["leave: SIGTERM of the first until both others applied more (s)"] = (
            time.monotonic() - left_at
        )

        rebalances_seen.set()
        producer.join(timeout=120)
        assert not failures, f"producing failed: {failures[0]!r}"
        assert produced_all.is_set(), "the producer did not finish"
        assert produced < len(events), "events stopped arriving before the rebalances were seen"
        events = events[:produced]
        wait_for_effects(database, len(events), [b, c])
        for process in (b, c):
            assert process.terminate() == 0, process.tail()
    finally:
        for process in processes:
            process.stop_quietly()

    rows = effect_rows(database)
    problems = exactly_once_in_order_problems(rows, events)
    assert not problems, "\n".join(problems)
    assert inbox_count(database, consumer_group) == len(events)
    by_pid = Counter(row[4] for row in rows)
    assert all(by_pid[process.pid] > 0 for process in processes), by_pid
    duplicates = sum(s[-1].duplicates for p in processes if (s := p.summaries()))
    print(
        f"{handler} handler, {len(events):,} events: effects per instance: {dict(by_pid)}; "
        "duplicates skipped (last metrics lines): "
        f"{duplicates}; " + "; ".join(f"{what}: {seconds:.1f}" for what, seconds in figures.items())
    )
