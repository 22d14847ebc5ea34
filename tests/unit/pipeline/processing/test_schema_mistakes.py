"""A handler writing to a table or column that does not exist: the handler's error on SQLite
as on PostgreSQL (retried, then dead-lettered), not "the database is unavailable" for ever."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from pipeline.database import build_engine, migrate
from pipeline.envelope import Event, encode
from pipeline.errors import PipelineError
from pipeline.processing import Processor, ProcessorTestDriver, UnitOfWork
from pipeline.processing.attempt import attempt, is_unavailable
from pipeline.processing.records import Record
from pipeline.settings import DatabaseSettings
from tests.support.driving import driver_settings

TOPIC = "requests.orders"


def _error_of(engine, statement: str) -> OperationalError:
    with pytest.raises(OperationalError) as caught, engine.begin() as connection:
        connection.execute(text(statement))
    return caught.value


def test_a_missing_table_or_column_on_sqlite_is_not_unavailability(tmp_path: Path):
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE orders (id INTEGER)"))

    assert not is_unavailable(_error_of(engine, "INSERT INTO nowhere VALUES (1)"))
    assert not is_unavailable(_error_of(engine, "INSERT INTO orders (missing) VALUES (1)"))
    assert not is_unavailable(_error_of(engine, "SELECT total FROM orders"))


def test_a_locked_sqlite_database_is_still_unavailable(tmp_path: Path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
        error = _error_of(engine, "INSERT INTO t VALUES (1)")
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert "locked" in str(error)
    assert is_unavailable(error)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'p.db'}"))
    migrate(engine)
    yield engine
    engine.dispose()


def test_an_attempt_whose_handler_writes_to_a_missing_table_failed_on_sqlite(sqlite_engine):
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def write(event: Event, unit: UnitOfWork) -> None:
        unit.session.execute(text("INSERT INTO no_such_table VALUES (1)"))

    message = encode(Event(source="/t", type="t", partitionkey="k", data={}))
    record = Record(TOPIC, 0, 0, message.key, message.value, message.headers)

    result = attempt(record, processor=processor, engine=sqlite_engine, consumer_group="orders")

    assert result.kind == "failed"
    assert "no such table" in str(result.error)


@pytest.mark.timeout(60)  # retried for ever, as "unavailable", before the fix
def test_a_handler_writing_to_a_missing_table_is_dead_lettered_after_its_retries():
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def write(event: Event, unit: UnitOfWork) -> None:
        unit.session.execute(text("INSERT INTO no_such_table VALUES (1)"))

    driver = ProcessorTestDriver(processor, settings=driver_settings())
    try:
        driver.send(TOPIC, Event(source="/t", type="t", partitionkey="k", data={}))
        snapshot = driver.run()
        [letter] = driver.dead_letters(TOPIC)
    finally:
        driver.close()

    assert (letter.reason, letter.attempts) == ("retries_exhausted", 3)
    assert "no such table" in letter.error_message
    assert snapshot.dead_lettered == {"retries_exhausted": 1}


def test_a_failing_start_hook_is_a_pipeline_error_naming_the_hook(sqlite_engine):
    processor = Processor("orders")

    @processor.on_start
    def create_views(database: Engine) -> None:
        with database.connect() as connection:
            connection.execute(text("SELECT total FROM no_such_table"))

    with pytest.raises(PipelineError) as caught:
        processor.start(sqlite_engine)

    assert str(caught.value).startswith(
        "orders: start hook test_a_failing_start_hook_is_a_pipeline_error_naming_the_hook."
        "<locals>.create_views failed: OperationalError: "
    )
    assert "no such table: no_such_table" in str(caught.value)
    assert isinstance(caught.value.__cause__, OperationalError)
