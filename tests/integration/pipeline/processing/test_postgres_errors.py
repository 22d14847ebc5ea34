"""PostgreSQL's errors on the processing path: which say the database is away (retried without
limit) and which an event causes itself (retried as the policy says, then dead-lettered), and
two attempts of one redriven event at once applying it once."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, func, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from pipeline.database import build_engine, migrate
from pipeline.dead_letters import letter as dead_letters
from pipeline.envelope import Event, encode
from pipeline.processing import Processor, ProcessorTestDriver, UnitOfWork, inbox
from pipeline.processing.attempt import attempt, is_unavailable
from pipeline.processing.records import Record
from pipeline.retry import RetryPolicy
from pipeline.settings import DatabaseSettings, ProcessingSettings

TOPIC = "requests.orders"
GROUP = "orders-service"

metadata = MetaData()
notes = Table(
    "test_pg_error_notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # A btree index: a row of it holds at most ~2.7 kB (after compression: random text).
    Column("text", Text, index=True),
)
effects = Table(
    "test_pg_error_effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
)


@pytest.fixture
def database(postgres_url: str) -> Iterator[Engine]:
    engine = build_engine(DatabaseSettings(url=postgres_url), pool_size=4)
    migrate(engine)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def _error_of(engine: Engine, statement: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as caught, engine.begin() as connection:
        connection.execute(text(statement))
    return caught.value


def test_errors_the_event_causes_are_not_unavailability(database: Engine):
    too_large = _error_of(
        database,
        "INSERT INTO test_pg_error_notes (text) "
        "SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400)",
    )
    timed_out = _error_of(database, "SET LOCAL statement_timeout = 10; SELECT pg_sleep(1)")

    assert getattr(too_large.orig, "sqlstate", None) == "54000"
    assert not is_unavailable(too_large)
    assert getattr(timed_out.orig, "sqlstate", None) == "57014"
    assert not is_unavailable(timed_out)


def test_a_connection_ended_by_the_server_is_unavailability(database: Engine):
    with pytest.raises(DBAPIError) as caught, database.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    assert is_unavailable(caught.value)


def test_an_event_over_a_program_limit_is_dead_lettered_after_its_attempts(database: Engine):
    # It was taken for an outage: retried for ever, its key and partition held.
    processor = Processor(GROUP)

    @processor.handler(TOPIC)
    def note(event: Event, unit: UnitOfWork) -> None:
        unit.session.execute(insert(notes).values(text=event.data["text"]))

    settings = ProcessingSettings(
        sync_group_wait_ms=0, retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01, jitter=0)
    )
    driver = ProcessorTestDriver(processor, database=database, settings=settings)
    driver.send(
        TOPIC,
        encode(
            Event(
                source="/t", type="Note", partitionkey="k", data={"text": os.urandom(6_000).hex()}
            )
        ),
    )
    driver.send(
        TOPIC, encode(Event(source="/t", type="Note", partitionkey="k2", data={"text": "short"}))
    )

    driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert letter.reason == "retries_exhausted"
    assert letter.attempts == 3
    assert driver.committed[(TOPIC, 0)] == 2
    with database.connect() as connection:
        assert connection.execute(select(func.count()).select_from(notes)).scalar_one() == 1


def test_two_attempts_of_one_redriven_event_at_once_apply_it_once(database: Engine):
    processor = Processor(GROUP)
    both_in_handler = threading.Barrier(2, timeout=10)

    @processor.handler(TOPIC)
    def place(event: Event, unit: UnitOfWork) -> None:
        unit.session.execute(insert(effects).values(event_id=event.id))
        both_in_handler.wait()  # neither has committed yet

    processor.start(database)
    event = Event(source="/t", type="Placed", partitionkey="k", data={})
    message = encode(event)
    with database.begin() as connection:  # it was dead-lettered once
        inbox.claim(
            connection,
            consumer_group=GROUP,
            event_id=event.id,
            topic=TOPIC,
            partition=0,
            offset=0,
            outcome="dead_lettered",
        )
    headers = [
        *message.headers,
        (dead_letters.REDRIVE_ID, b"r1"),
        (dead_letters.REDRIVE_LAST, b"false"),
    ]
    record = Record(TOPIC, 0, 5, message.key, message.value, headers, None)
    results: list[str] = []

    def run() -> None:
        result = attempt(record, processor=processor, engine=database, consumer_group=GROUP)
        results.append(result.kind)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(results) == ["duplicate", "processed"]
    with database.connect() as connection:
        assert connection.execute(select(func.count()).select_from(effects)).scalar_one() == 1
