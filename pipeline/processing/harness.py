"""Several processors wired together without a broker, the way the outbox relay wires them.

::

    orchestrator = SagaOrchestrator(registry)
    harness = PipelineHarness(
        [orders, orchestrator_processor(orchestrator), inventory],
        clocked=[orchestrator],           # components that read the virtual clock
        partitions={"requests.orders": 6},
    )
    harness.send("requests.orders", place_order)
    harness.run_until_idle()          # handle, relay the outbox, handle what it sent, ...
    harness.advance(1800)             # 30 virtual minutes: timeouts and deadlines fire
    harness.advance_to(moment)        # the same, to a moment: advance(moment - now)
    assert harness.published("saga.events")[-1].type == "pipeline.saga.saga_completed"
    assert harness.sagas()["o-1"].status == "completed"

One database (a temporary SQLite file unless given) is shared by every processor, as services
sharing the demo's database do. Each processor reads its topics through a
:class:`~pipeline.processing.driver.ProcessorTestDriver` of its own (its own committed
positions, like a consumer group), all on the harness's partitions and
:class:`~pipeline.processing.clock.VirtualClock` (moved by :meth:`PipelineHarness.advance`
and :meth:`PipelineHarness.advance_to`: moved by hand past a saga deadline, the harness refuses to
run, as that deadline would fire late). :meth:`PipelineHarness.relay` publishes the
outbox in its order, to every processor that reads the topic and to
:meth:`PipelineHarness.published`. The processors' periodic tasks (:meth:`Processor.every`) run
once per round, whatever their interval (the harness keeps no timer of theirs); ``clocked``
components (a saga orchestrator, a service's saga starter) read the harness's clock while it is
open, and get their own clock back on :meth:`PipelineHarness.close`. ``outbox``: the outbox
settings of every processor (``unit.emit`` routes with their ``routes``, as under ``pipeline
process``); the defaults unless given.

An event whose handler raises :class:`~pipeline.processing.processor.NotYet` (a saga reply of
a version an orchestrator's registry lacks) is never dead-lettered and does not keep the
harness busy: its driver's run ends once only such events are left, uncommitted (its
consumer group's read-through time stays before them, so the orchestrators' timeouts wait),
and every later round tries them again (see :mod:`pipeline.processing.driver`).

Inspection: :meth:`~PipelineHarness.published` (what the relay sent, per topic),
:meth:`~PipelineHarness.dead_letters`, :meth:`~PipelineHarness.inbox`,
:meth:`~PipelineHarness.outbox` and :meth:`~PipelineHarness.sagas`.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.dead_letters.letter import DeadLetter
from pipeline.envelope import Event, KafkaMessage, decode
from pipeline.outbox.table import RECORD_COLUMNS, OutboxRecord, outbox_table, record_of
from pipeline.processing.clock import VirtualClock
from pipeline.processing.driver import (
    ProcessorTestDriver,
    recorded_message,
    recorded_partitions,
    unread_topic_error,
)
from pipeline.processing.inbox import inbox_table
from pipeline.processing.processor import Processor
from pipeline.replay.recording import RecordedMessage
from pipeline.sagas.state import SagaState
from pipeline.sagas.store import sagas_table
from pipeline.settings import DatabaseSettings, OutboxSettings, ProcessingSettings

__all__ = ["Clocked", "InboxEntry", "PipelineHarness", "VirtualClock"]


class Clocked(Protocol):
    """A component that reads the time through a ``clock`` attribute (a saga orchestrator)."""

    clock: Callable[[], datetime]


@dataclass(frozen=True)
class InboxEntry:
    """One inbox row: an input a consumer group took, and what came of it."""

    consumer_group: str
    event_id: str
    topic: str
    partition: int
    offset: int
    #: ``processed`` or ``dead_lettered``.
    outcome: str


class PipelineHarness:
    def __init__(
        self,
        processors: Sequence[Processor],
        *,
        database: Engine | None = None,
        clock: VirtualClock | None = None,
        settings: ProcessingSettings | None = None,
        partitions: int | Mapping[str, int] = 1,
        clocked: Sequence[Clocked] = (),
        outbox: OutboxSettings | None = None,
    ) -> None:
        self.clock = clock or VirtualClock()
        self._clocked = [(component, component.clock) for component in clocked]
        for component in clocked:
            component.clock = self.clock
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if database is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pipeline-harness-")
            path = Path(self._tmp.name) / "harness.db"
            database = build_engine(DatabaseSettings(url=f"sqlite:///{path}"))
        migrate(database)
        self.database = database
        self.drivers = [
            ProcessorTestDriver(
                processor,
                database=database,
                settings=settings,
                clock=self.clock,
                partitions=partitions,
                outbox=outbox,
            )
            for processor in processors
        ]
        self._published: dict[str, list[KafkaMessage]] = defaultdict(list)
        #: The clock's time when the harness last moved it or ran: a clock found later than
        #: this was moved past it by hand (``harness.clock.advance``), see :meth:`_check_clock`.
        self._seen = self.clock.now

    # --- input -------------------------------------------------------------------------------

    def send(
        self, topic: str, message: Event | KafkaMessage, *, timestamp_ms: int | None = None
    ) -> None:
        """Append ``message`` to ``topic`` for every processor that reads it (on its key's
        partition). A topic no processor reads is a :class:`ValueError` naming those they
        read: nothing would ever handle the message."""
        self.check_read(topic)
        self._deliver(topic, message, timestamp_ms=timestamp_ms)

    def send_all(self, topic: str, messages: Iterable[Event | KafkaMessage]) -> int:
        """:meth:`send` each of ``messages`` in order; returns how many."""
        self.check_read(topic)  # none at all to a topic nobody reads is a mistake too
        count = 0
        for message in messages:
            self.send(topic, message)
            count += 1
        return count

    def check_read(self, topic: str) -> None:
        """A :class:`ValueError` naming the topics read unless some processor reads ``topic``."""
        if not any(topic in driver.processor.topics for driver in self.drivers):
            raise unread_topic_error(
                topic,
                [name for driver in self.drivers for name in driver.processor.topics],
                ", ".join(driver.processor.name for driver in self.drivers),
            )

    def _deliver(
        self, topic: str, message: Event | KafkaMessage, *, timestamp_ms: int | None = None
    ) -> None:
        """``message`` to every processor that reads ``topic``, if any (the relay publishes
        to topics no processor here reads, a service's outputs)."""
        for driver in self.drivers:
            if topic in driver.processor.topics:
                driver.append(topic, message, timestamp_ms=timestamp_ms)

    def send_recording(
        self,
        messages: Iterable[RecordedMessage],
        *,
        topic: str | None = None,
        preserve_partitions: bool = False,
    ) -> int:
        """Append recorded messages in their order, to their own topics or ``topic``, for
        every processor that reads it (see :meth:`ProcessorTestDriver.send_recording`);
        returns how many. Messages of a topic no processor reads are counted and dropped
        (``replay_into_driver`` warns of them). With ``preserve_partitions`` the whole
        recording is checked first: a partition a topic lacks is a :class:`ValueError`, and
        nothing was sent."""
        messages = list(messages)
        if preserve_partitions:
            spans = recorded_partitions(messages, topic=topic)
            for driver in self.drivers:
                driver.check_kept_partitions(
                    {name: span for name, span in spans.items() if name in driver.processor.topics}
                )
        for recorded in messages:
            name = topic or recorded.topic
            for driver in self.drivers:
                if name in driver.processor.topics:
                    driver.append(
                        name,
                        recorded_message(recorded),
                        partition=driver.replay_partition(
                            name, recorded, preserve=preserve_partitions
                        ),
                        timestamp_ms=recorded.timestamp_ms,
                    )
        return len(messages)

    # --- running -----------------------------------------------------------------------------

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
                .values(published_at=self.clock())
            )
        for row in rows:
            record = record_of(row)
            message = record.message()
            self._published[record.topic].append(message)
            self._deliver(record.topic, message)
        return len(rows)

    def run_periodic_tasks(self) -> None:
        """Run every processor's periodic tasks once, at the clock's time, without handling
        first. After ``harness.clock.advance(...)`` this is how a test fires the saga
        deadlines passed on the way late, on purpose (an orchestrator that was behind)."""
        for driver in self.drivers:
            for task in driver.processor.periodic_tasks:
                task.run(self.database)
        self._seen = self.clock.now

    def run_until_idle(self, max_rounds: int = 10_000) -> int:
        """Handle, relay and run periodic tasks until nothing moves; returns the rounds. A
        :class:`RuntimeError` if the clock was moved by hand past a saga deadline (see
        :meth:`advance_to`)."""
        self._check_clock()
        return self._run_until_idle(max_rounds)

    def _run_until_idle(self, max_rounds: int = 10_000) -> int:
        for rounds in range(1, max_rounds + 1):
            for driver in self.drivers:
                driver.run()
            self.run_periodic_tasks()
            if self.relay() == 0:
                return rounds
        raise RuntimeError(f"still busy after {max_rounds} rounds: a loop between processors?")

    def advance(self, seconds: float, *, step: float | None = None) -> None:
        """Move the clock ``seconds`` ahead, running until idle at each saga deadline or backoff
        that falls due on the way, in time order (so each fires at its own moment, and what it
        starts, a retry and its timeout, the next compensation, falls due in turn), then at the
        end.

        With ``step``, move in steps of that many seconds and run until idle after each (for
        deadlines the harness cannot see: a component's own timers on the clock).
        """
        self._check_sagas_on_the_clock()
        self._check_clock()
        if step is None or step >= seconds:
            end = self.clock.now + timedelta(seconds=seconds)
            while (due := self._next_saga_deadline()) is not None and due <= end:
                if due <= self.clock.now:
                    break  # due already and still there after running: nothing fires it
                self.clock.advance_to(due)
                self._run_until_idle()
            self.clock.advance_to(end)
            self._run_until_idle()
            return
        if step <= 0:
            raise ValueError(f"step must be above 0 s, got {step}")
        moved = 0.0
        while moved < seconds:
            stride = min(step, seconds - moved)
            self.clock.advance(stride)
            self._run_until_idle()
            moved += stride

    def advance_to(self, moment: datetime, *, step: float | None = None) -> None:
        """:meth:`advance` to ``moment`` (an aware datetime): ``advance(moment - now)``, each
        saga deadline and backoff on the way firing at its own moment.

        Move the clock through the harness: ``harness.clock.advance_to(moment)`` moves it
        without running anything, so a deadline passed on the way would fire late, at
        ``moment``, and what it starts (a retry, its timeout) would wait for a later move. The
        harness refuses to run after that (:class:`RuntimeError`), unless
        :meth:`run_periodic_tasks` is called first, to fire such deadlines late on purpose.
        """
        if not isinstance(moment, datetime) or moment.tzinfo is None:
            raise TypeError(
                "advance_to takes an aware datetime, like harness.clock.now + "
                f"timedelta(minutes=30); got {moment!r:.60}"
            )
        self.advance((moment - self.clock.now).total_seconds(), step=step)

    def _check_clock(self) -> None:
        """Refuse to run when the clock was moved by hand (``harness.clock.advance``, not
        :meth:`advance`) past a saga deadline: that deadline would fire at the clock's time,
        not its own, and what it starts would wait for a later move."""
        now = self.clock.now
        if now > self._seen:
            query = sa.select(sa.func.min(sagas_table.c.next_deadline)).where(
                sagas_table.c.next_deadline > self._seen,
                sagas_table.c.next_deadline < now,
            )
            with self.database.connect() as connection:
                passed: datetime | None = connection.execute(query).scalar()
            if passed is not None:
                passed = passed.replace(tzinfo=UTC) if passed.tzinfo is None else passed
                raise RuntimeError(
                    f"the harness clock was moved to {now.isoformat()} past a saga deadline "
                    f"due at {passed.isoformat()} without the harness, so it would fire late: "
                    "move the clock with harness.advance(seconds) or harness.advance_to(moment)"
                    ", which fire each deadline at its own time (or call "
                    "harness.run_periodic_tasks() first, to fire it late on purpose)"
                )
        self._seen = now

    def _check_sagas_on_the_clock(self) -> None:
        """Refuse to move the clock past sagas it cannot time: one started after the clock's
        now was started by an orchestrator on its own (real) clock, so its deadlines lie far
        beyond any advance() and a test of its timeout would pass or fail for nothing."""
        query = (
            sa.select(sagas_table.c.saga_id, sagas_table.c.created_at)
            .order_by(sagas_table.c.created_at.desc())
            .limit(1)
        )
        with self.database.connect() as connection:
            latest = connection.execute(query).first()
        if latest is None:
            return
        started = latest.created_at
        started = started.replace(tzinfo=UTC) if started.tzinfo is None else started
        if started > self.clock.now:
            raise RuntimeError(
                f"saga {latest.saga_id} started at {started.isoformat()}, after the harness "
                f"clock's {self.clock.now.isoformat()}: the SagaOrchestrator that started it "
                "does not read the harness clock, so advance() cannot reach its deadlines; "
                "list it in PipelineHarness(clocked=[...])"
            )

    def _next_saga_deadline(self) -> datetime | None:
        """The earliest deadline or backoff of a saga not ended, if any."""
        query = sa.select(sa.func.min(sagas_table.c.next_deadline))
        with self.database.connect() as connection:
            moment: datetime | None = connection.execute(query).scalar()
        if moment is None:
            return None
        # SQLite hands times back without their zone; every stored time is UTC.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment

    # --- inspection --------------------------------------------------------------------------

    def published(self, topic: str) -> list[Event]:
        """The events relayed to ``topic`` so far, in order."""
        return [decode(m.value, m.headers, m.key) for m in self._published[topic]]

    def published_messages(self, topic: str) -> list[KafkaMessage]:
        """The messages relayed to ``topic`` so far, in order, as they went out."""
        return list(self._published[topic])

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The pending dead letters of ``topic``, from every processor that reads it; a topic
        no processor reads is a :class:`ValueError` (it has none, for ever)."""
        self.check_read(topic)
        return [
            letter
            for driver in self.drivers
            if topic in driver.processor.topics
            for letter in driver.dead_letters(topic)
        ]

    def inbox(self, consumer_group: str | None = None) -> list[InboxEntry]:
        """The inbox rows (of one consumer group when given), in the order they were taken."""
        query = sa.select(
            inbox_table.c.consumer_group,
            inbox_table.c.event_id,
            inbox_table.c.topic,
            inbox_table.c.partition,
            inbox_table.c.offset,
            inbox_table.c.outcome,
        ).order_by(inbox_table.c.recorded_at, inbox_table.c.consumer_group, inbox_table.c.event_id)
        if consumer_group is not None:
            query = query.where(inbox_table.c.consumer_group == consumer_group)
        with self.database.connect() as connection:
            return [InboxEntry(*row) for row in connection.execute(query)]

    def outbox(self, *, unpublished_only: bool = False) -> list[OutboxRecord]:
        """The outbox rows in position order (only those not relayed yet, when asked)."""
        query = sa.select(*RECORD_COLUMNS).order_by(outbox_table.c.position)
        if unpublished_only:
            query = query.where(outbox_table.c.published_at.is_(None))
        with self.database.connect() as connection:
            return [record_of(row) for row in connection.execute(query)]

    def sagas(self) -> dict[str, SagaState]:
        """Every saga's state, by saga id (in id order)."""
        with self.database.connect() as connection:
            rows = connection.execute(
                sa.select(sagas_table.c.saga_id, sagas_table.c.state).order_by(
                    sagas_table.c.saga_id
                )
            ).all()
        return {saga_id: SagaState.model_validate(state) for saga_id, state in rows}

    def driver(self, processor_name: str) -> ProcessorTestDriver:
        for driver in self.drivers:
            if driver.processor.name == processor_name:
                return driver
        raise KeyError(processor_name)

    # --- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        for component, own_clock in self._clocked:
            component.clock = own_clock
        self._clocked = []
        for driver in self.drivers:
            driver.close()
        self.database.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> PipelineHarness:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()
