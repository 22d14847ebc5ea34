"""Several processors wired together without a broker, the way the outbox relay wires them.

::

    harness = PipelineHarness([orders, orchestrator_processor(orchestrator), inventory])
    harness.send("requests.orders", place_order)
    harness.run_until_idle()          # handle, relay the outbox, handle what it sent, ...
    harness.clock.advance(30)         # virtual time: retries, timeouts and deadlines
    harness.run_until_idle()
    assert harness.published("saga.events")[-1].type == "pipeline.saga.saga_completed"

One database (a temporary SQLite file unless given) is shared by every processor, as services
sharing the demo's database do. Each processor reads its topics through a
:class:`~pipeline.processing.driver.ProcessorTestDriver` of its own (its own committed
positions, like a consumer group). :meth:`PipelineHarness.relay` publishes the outbox in its
order, to every processor that reads the topic and to :meth:`PipelineHarness.published`. The
processors' periodic tasks (:meth:`Processor.every`) run once per round, on the harness's
:class:`VirtualClock` when they were given it.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.envelope import Event, KafkaMessage, decode
from pipeline.outbox.table import RECORD_COLUMNS, outbox_table, record_of
from pipeline.processing.driver import ProcessorTestDriver
from pipeline.processing.processor import Processor
from pipeline.settings import DatabaseSettings, ProcessingSettings

__all__ = ["PipelineHarness", "VirtualClock"]


class VirtualClock:
    """A clock that moves only when told: pass ``clock`` where a component takes one."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class PipelineHarness:
    def __init__(
        self,
        processors: Sequence[Processor],
        *,
        database: Engine | None = None,
        clock: VirtualClock | None = None,
        settings: ProcessingSettings | None = None,
    ) -> None:
        self.clock = clock or VirtualClock()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if database is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pipeline-harness-")
            path = Path(self._tmp.name) / "harness.db"
            database = build_engine(DatabaseSettings(url=f"sqlite:///{path}"))
        migrate(database)
        self.database = database
        self.drivers = [
            ProcessorTestDriver(processor, database=database, settings=settings)
            for processor in processors
        ]
        self._published: dict[str, list[KafkaMessage]] = defaultdict(list)

    def send(self, topic: str, message: Event | KafkaMessage) -> None:
        """Append ``message`` to ``topic`` for every processor that reads it."""
        for driver in self.drivers:
            if topic in driver.processor.topics:
                driver.send(topic, message)

    def relay(self) -> int:
        """Publish every unpublished outbox row, in position order; returns how many."""
        with self.database.begin() as connection:
            rows = connection.execute(
                sa.select(*RECORD_COLUMNS)
                .where(outbox_table.c.published_at.is_(None))
                .order_by(outbox_table.c.position)
            ).all()
            if not rows:
                return 0
            connection.execute(
                sa.update(outbox_table)
                .where(outbox_table.c.position.in_([row[0] for row in rows]))
                .values(published_at=datetime.now(UTC))
            )
        for row in rows:
            record = record_of(row)
            message = record.message()
            self._published[record.topic].append(message)
            self.send(record.topic, message)
        return len(rows)

    def run_periodic_tasks(self) -> None:
        for driver in self.drivers:
            for task in driver.processor.periodic_tasks:
                task.run(self.database)

    def run_until_idle(self, max_rounds: int = 10_000) -> int:
        """Handle, relay and run periodic tasks until nothing moves; returns the rounds."""
        for rounds in range(1, max_rounds + 1):
            for driver in self.drivers:
                driver.run()
            self.run_periodic_tasks()
            if self.relay() == 0:
                return rounds
        raise RuntimeError(f"still busy after {max_rounds} rounds: a loop between processors?")

    def advance(self, seconds: float) -> None:
        """Move the clock, then run until idle (deadlines that fell due fire)."""
        self.clock.advance(seconds)
        self.run_until_idle()

    def published(self, topic: str) -> list[Event]:
        """The events relayed to ``topic`` so far, in order."""
        return [decode(m.value, m.headers, m.key) for m in self._published[topic]]

    def driver(self, processor_name: str) -> ProcessorTestDriver:
        for driver in self.drivers:
            if driver.processor.name == processor_name:
                return driver
        raise KeyError(processor_name)

    def close(self) -> None:
        for driver in self.drivers:
            driver.close()
        self.database.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> PipelineHarness:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
