"""A processor for the backend tests: counts each key's events, and announces every tenth; an
event with a negative ``n`` is refused (dead-lettered)."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, select, update
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine

from pipeline.envelope import Event
from pipeline.processing import Processor, Reject, UnitOfWork

TOPIC = "test.counting.input"
OUTPUT = "test.counting.tens"

tables = MetaData()
counts = Table(
    "test_counts",
    tables,
    Column("key", String(64), primary_key=True),
    Column("count", Integer, nullable=False),
)

processor = Processor("test-counting")


@processor.on_start
def create_tables(database: Engine) -> None:
    tables.create_all(database)


@processor.handler(TOPIC)
def count(event: Event, unit: UnitOfWork) -> None:
    key = event.partitionkey or "none"
    if event.data["n"] < 0:
        raise Reject(f"{key}: n must not be negative, got {event.data['n']}")
    unit.session.execute(insert(counts).values(key=key, count=0).on_conflict_do_nothing())
    unit.session.execute(update(counts).where(counts.c.key == key).values(count=counts.c.count + 1))
    now = unit.session.execute(select(counts.c.count).where(counts.c.key == key)).scalar_one()
    if now % 10 == 0:
        unit.emit(
            Event(source="/counting", type="Tenth", data={"key": key, "count": now}),
            aggregate_type="counter",
            aggregate_id=key,
            topic=OUTPUT,
        )


#: A second processor: it emits without a topic, so its events go where the outbox routes say.
ROUTED = "test.routing.input"
routing = Processor("test-routing")


@routing.handler(ROUTED)
def announce(event: Event, unit: UnitOfWork) -> None:
    unit.emit(
        Event(source="/routing", type="Announced", data=event.data),
        aggregate_type="announcement",
        aggregate_id=event.partitionkey or "none",
    )
