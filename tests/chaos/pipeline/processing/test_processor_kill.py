"""A processor is killed (SIGKILL) again and again while it works, and restarted each time.

6,000 events over 200 keys; each handler call writes its effect (a row) to PostgreSQL. The
kills land at random moments (seeded) after the restarted processor made progress, so each
leaves work done but not committed to Kafka; the restart reads those events again and the
inbox skips them. Afterwards every event has exactly one effect, and every key's effects are
in the key's order.

Both handler kinds commit in groups: synchronous handlers (``sync``, in worker threads) run
several events one after another in one transaction, ``async def`` handlers (``async``) have
their first attempts' writes committed together. While they are killed their calls are slowed
(see :data:`VARIANTS`), so the events outlast the five kills on any machine.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

import pytest

from pipeline.topics.catalogue import dlq_name
from tests.support.processor_runs import (
    ProcessorProcess,
    committed_total,
    effect_rows,
    effects_count,
    effects_database,
    effects_env,
    exactly_once_in_order_problems,
    inbox_count,
    keyed_events,
    produce,
    wait_for_effects,
    wait_until,
)

KEYS = 200
PARTITIONS = 3
KILLS = 5


@dataclass(frozen=True)
class Variant:
    """How a handler kind is run: events per key, the environment of every run, and what
    changes in it for the runs that are killed."""

    per_key: int
    env: dict[str, str | int | float]
    killed_env: dict[str, str | int | float] = field(default_factory=dict)


#: Both: 6,000 events; the group forgets a killed member after 6 s instead of 10 s, and the
#: final run (never killed) waits 1 ms in each handler call: both keep CI's run short. While
#: they are killed, each call waits 40 ms, so the 16 events in flight (the default) apply at
#: most 400 events a second on any machine, grouped or not, and the events outlast the five
#: kills (with the default seed the waits before them add up to 8 s, so at most about 4,000
#: are applied by the last kill). ``sync``: meanwhile a group of synchronous handlers may hold
#: as many events as 200 ms of calls (sync_group_wait_ms), about 5: the kills land in groups'
#: transactions, as they did with 1 ms calls and the default 10 ms.
_KILLED_SLOWLY: dict[str, str | int | float] = {"EFFECTS_SLEEP_MS": 40}
_QUICK_RESTARTS: dict[str, str | int | float] = {
    "EFFECTS_SLEEP_MS": 1,
    "PIPELINE_PROCESSING__SESSION_TIMEOUT_S": 6,
}
VARIANTS = {
    "sync": Variant(
        30,
        _QUICK_RESTARTS,
        killed_env={**_KILLED_SLOWLY, "PIPELINE_PROCESSING__SYNC_GROUP_WAIT_MS": 200},
    ),
    "async": Variant(30, _QUICK_RESTARTS, killed_env=_KILLED_SLOWLY),
}
SEED = int(os.environ.get("PIPELINE_CHAOS_SEED", "20240611"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("handler", ["sync", "async"])
def test_a_processor_killed_repeatedly_applies_every_event_once_in_key_order(
    handler, pipeline_settings, new_topic, postgres_url, consumer_group, tmp_path
):
    rng = random.Random(SEED)
    variant = VARIANTS[handler]
    events_total = KEYS * variant.per_key
    topic = new_topic(partitions=PARTITIONS, prefix="effects")
    dlq = dlq_name(topic)
    new_topic(partitions=PARTITIONS, name=dlq)  # deleted after the test, like the topic
    database = effects_database(postgres_url)
    events = keyed_events(KEYS, variant.per_key)
    produce(pipeline_settings, topic, events)
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        EFFECTS_HANDLER=handler,
        **variant.env,
    )
    killed_env = {**env, **{name: str(value) for name, value in variant.killed_env.items()}}

    runs: list[ProcessorProcess] = []
    kills = []  # (effects at the kill, committed offsets after it, seconds since the start)
    try:
        for n in range(KILLS):
            before = effects_count(database)
            run = ProcessorProcess(killed_env, tmp_path / f"run-{n}.log")
            runs.append(run)

            def progressed(run=run, before=before):
                run.assert_alive()
                return effects_count(database) > before

            wait_until(progressed, timeout_s=120, what=f"run {n} to apply effects")
            time.sleep(rng.uniform(0.2, 3.0))
            run.assert_alive()
            run.kill()
            time.sleep(1)  # a commit request sent just before the kill has been served
            applied = effects_count(database)
            committed = committed_total(pipeline_settings, topic, consumer_group, PARTITIONS)
            kills.append((applied, committed, time.monotonic() - run.started_at))
            assert applied < events_total, "the processor finished before every kill landed"

        final = ProcessorProcess(env, tmp_path / "final.log")
        runs.append(final)
        start_applied, start_committed, _ = kills[-1]

        wait_for_effects(database, events_total, [final])

        summary = final.settled_summary(events_total - start_applied)
        assert final.terminate() == 0, final.tail()
    finally:
        for run in runs:
            run.stop_quietly()

    rows = effect_rows(database)
    problems = exactly_once_in_order_problems(rows, events)
    assert not problems, "\n".join(problems)
    assert len({row[3] for row in rows}) == events_total
    assert inbox_count(database, consumer_group) == events_total
    assert len({row[4] for row in rows}) >= 2, "the effects should come from several runs"

    # Work done but not committed to Kafka at a kill is read again after the restart; the
    # inbox skips it. At the last kill that was `start_applied - start_committed` events.
    redone = [applied - committed for applied, committed, _ in kills]
    assert all(gap >= 0 for gap in redone), f"committed past the effects: {kills}"
    assert any(redone), f"no kill left done-but-uncommitted work, so none tested the inbox: {kills}"
    assert summary.duplicates >= start_applied - start_committed
    assert summary.dead_lettered == 0
    print(
        f"{handler} handler, seed {SEED}; "
        f"kills at (effects, committed, seconds after start): {kills}; "
        f"events read again after each kill: {redone}; final run: {summary}"
    )
