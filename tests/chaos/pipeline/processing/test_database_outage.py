"""PostgreSQL stops while a processor with ``async def`` handlers works on it
(``pipeline stack down --only postgres``), and is started again 6 s later (``pipeline stack
up --only postgres``): a PostgreSQL of the test's own (an isolated stack's, on a port of its
own), so that tests running beside this one keep the shared one. The processor stays up, waits
for the database, and afterwards every event is recorded exactly once: none lost, none doubled,
nothing dead-lettered.

Two variants of the handlers' writes, for the two ways a group reaches PostgreSQL:
``effects`` (a row per event: the group look-ups run on the event loop's own connections, the
commits in worker threads) and ``nothing`` (only the inbox rows, claimed on the event loop's
connections; a claim that fails there is committed from a thread, see
``pipeline.processing.loop_inbox``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.database import migrate
from pipeline.settings import PipelineSettings
from pipeline.stack.postgres_node import create_database, database_url
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
    wait_until,
)
from tests.support.stack_cli import run_pipeline

KEYS = 100
PER_KEY = 30
PARTITIONS = 3
OUTAGE_S = 6


#: The isolated stack's settings that make its PostgreSQL (its Kafka is the shared one's).
_POSTGRES_SETTINGS = (
    "PIPELINE_STACK__HOME",
    "PIPELINE_STACK__DIST_DIR",
    "PIPELINE_STACK__POSTGRES_PORT",
)


@pytest.fixture
def own_postgres(
    pipeline_settings: PipelineSettings, isolated_stack_env: dict[str, str]
) -> Iterator[tuple[str, dict[str, str]]]:
    """A PostgreSQL of this test's own, up, with a database for it: its URL, and the
    environment with which ``pipeline stack`` stops and starts it (stopped and removed after,
    by ``isolated_stack_env``)."""
    env = {name: isolated_stack_env[name] for name in _POSTGRES_SETTINGS}
    started = run_pipeline("stack", "up", "--only", "postgres", env=env)
    assert started.returncode == 0, started.stderr
    stack = pipeline_settings.stack.model_copy(
        update={
            "home": Path(env["PIPELINE_STACK__HOME"]),
            "dist_dir": Path(env["PIPELINE_STACK__DIST_DIR"]),
            "postgres_port": int(env["PIPELINE_STACK__POSTGRES_PORT"]),
        }
    )
    create_database(stack, "outage")
    yield database_url(stack, "outage", with_password=True), env


@pytest.mark.timeout(600)
@pytest.mark.parametrize("writes", ["effects", "nothing"])
def test_a_postgresql_outage_mid_stream_loses_and_doubles_no_event(
    writes, pipeline_settings, pipeline_stack, new_topic, own_postgres, consumer_group, tmp_path
):
    postgres_url, postgres_env = own_postgres
    events_total = KEYS * PER_KEY
    topic = new_topic(partitions=PARTITIONS, prefix="effects")
    new_topic(partitions=PARTITIONS, name=dlq_name(topic))
    database = effects_database(postgres_url)
    migrate(database)  # the inbox is counted before the processor has migrated
    events = keyed_events(KEYS, PER_KEY)
    produce(pipeline_settings, topic, events)
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=postgres_url,
        EFFECTS_HANDLER="async",
        # Slow enough that the outage lands mid-stream: at 5 ms the 3,000 events took about
        # a second at the default 16 in flight, and once they were all recorded before
        # PostgreSQL had stopped (the test then found no outage in the processor's log).
        EFFECTS_SLEEP_MS=30,
        EFFECTS_WRITE=writes,
    )
    run = ProcessorProcess(env, tmp_path / "run.log")
    try:

        def started() -> bool:
            run.assert_alive()
            return inbox_count(database, consumer_group) > events_total // 10

        wait_until(started, timeout_s=120, what="the processor to record a tenth of the events")
        stopped = run_pipeline("stack", "down", "--only", "postgres", env=postgres_env)
        assert stopped.returncode == 0, stopped.stderr
        database.dispose()  # its connections died with the server
        time.sleep(OUTAGE_S)
        run.assert_alive()
        again = run_pipeline("stack", "up", "--only", "postgres", env=postgres_env)
        assert again.returncode == 0, again.stderr

        def all_recorded() -> bool:
            run.assert_alive()
            return inbox_count(database, consumer_group) >= events_total

        wait_until(all_recorded, timeout_s=180, what="every event recorded after the outage")

        summary = run.settled_summary(events_total)
        assert run.terminate() == 0, run.tail()
    finally:
        run.stop_quietly()

    log = run.log()
    assert "the database is unavailable" in log, "the outage did not reach the processor"
    assert "Traceback" not in log, run.tail()
    assert inbox_count(database, consumer_group) == events_total
    assert summary.dead_lettered == 0
    if writes == "effects":
        assert exactly_once_in_order_problems(effect_rows(database), events) == []
    else:
        assert effect_rows(database) == []
    database.dispose()
