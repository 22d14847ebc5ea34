"""A database outage met by every event in flight: logged at once, then at most once a minute,
then its end; the gauge and the summary line say it meanwhile. A pooled connection the database
had dropped (a restart) is no outage when the next attempt, on a new connection, works."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import generate_latest
from sqlalchemy.exc import DBAPIError, OperationalError

from pipeline.processing.database_outage import DatabaseOutage
from pipeline.processing.metrics import ProcessorMetrics, summary_line
from pipeline.processing.records import Record

RECORD = Record("requests.orders", 0, 7, b"k", b"{}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_an_outage_is_logged_at_once_then_at_most_once_a_minute_then_its_end(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.processing")
    clock = Clock()
    outage = DatabaseOutage("orders", ProcessorMetrics("orders"), consumer_group="g", clock=clock)
    error = ConnectionError("connection refused")

    for _ in range(30):  # the events in flight, in the first seconds
        outage.failed(RECORD, "e-1", error, 0.2)
        clock.now += 1.0
    clock.now += 31.0  # 61 s after the first
    outage.failed(RECORD, "e-2", error, 10.0)
    outage.failed(RECORD, "e-3", error, 10.0)
    clock.now += 4.0
    outage.answered()
    outage.answered()  # the next events: nothing more to say

    assert _said(caplog) == [
        "orders: the database is unavailable (connection refused); retrying e-1 in 0.2 s (the "
        "other events wait too; said again at most every 60 s while it lasts)",
        "orders: the database is still unavailable after 61 s (31 failed attempts so far): "
        "connection refused",
        "orders: the database answers again, after 65 s unavailable (32 failed attempts)",
    ]
    assert [record.levelname for record in caplog.records] == ["WARNING", "WARNING", "INFO"]


def test_the_gauge_and_the_summary_line_say_the_database_is_down_while_it_is():
    metrics = ProcessorMetrics("orders")
    outage = DatabaseOutage("orders", metrics, consumer_group="g")

    def up() -> str:
        lines = generate_latest(metrics.registry).decode().splitlines()
        return next(line for line in lines if line.startswith("pipeline_database_up{"))

    assert up() == 'pipeline_database_up{processor="orders"} 1.0'
    outage.failed(RECORD, "e-1", ConnectionError("refused"), 0.2)
    down = metrics.snapshot()
    assert up() == 'pipeline_database_up{processor="orders"} 0.0'
    assert summary_line("orders", down, None).endswith("; the database unavailable for 0 s")

    outage.answered()

    assert up() == 'pipeline_database_up{processor="orders"} 1.0'
    assert "database" not in summary_line("orders", metrics.snapshot(), None)


def dropped() -> DBAPIError:
    """What SQLAlchemy raises for a pooled connection the database had closed (a restart)."""
    return DBAPIError(
        "SELECT 1",
        None,
        Exception("terminating connection due to unexpected postmaster exit"),
        connection_invalidated=True,
    )


def test_a_pooled_connection_the_database_dropped_is_no_outage_when_a_new_one_works(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.processing")
    metrics = ProcessorMetrics("orders")
    outage = DatabaseOutage("orders", metrics, consumer_group="g", clock=Clock())

    outage.failed(RECORD, "e-1", dropped(), 0.2)
    outage.failed(RECORD, "e-2", dropped(), 0.2)  # another event in flight held one too
    outage.answered()

    assert _said(caplog) == []
    assert outage.since is None
    assert "database" not in summary_line("orders", metrics.snapshot(), None)


def test_an_outage_met_first_as_a_dropped_connection_is_said_with_the_next_error(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.processing")
    clock = Clock()
    outage = DatabaseOutage("orders", ProcessorMetrics("orders"), consumer_group="g", clock=clock)

    outage.failed(RECORD, "e-1", dropped(), 0.2)
    clock.now += 0.2
    outage.failed(RECORD, "e-1", ConnectionError("connection refused"), 0.4)
    clock.now += 9.8
    outage.answered()

    assert _said(caplog) == [
        "orders: the database is unavailable (connection refused); retrying e-1 in 0.4 s (the "
        "other events wait too; said again at most every 60 s while it lasts)",
        "orders: the database answers again, after 10 s unavailable (2 failed attempts)",
    ]


def test_connections_dropped_again_and_again_are_said_after_five_seconds(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.processing")
    clock = Clock()
    outage = DatabaseOutage("orders", ProcessorMetrics("orders"), consumer_group="g", clock=clock)

    for _ in range(6):
        outage.failed(RECORD, "e-1", dropped(), 1.0)
        clock.now += 1.0

    assert _said(caplog) == [
        "orders: the database is unavailable (terminating connection due to unexpected "
        "postmaster exit); retrying e-1 in 1.0 s (the other events wait too; said again at "
        "most every 60 s while it lasts)"
    ]


def refused() -> OperationalError:
    """What SQLAlchemy raises for a connection the driver could not make (no SQLSTATE)."""
    return OperationalError("SELECT 1", None, Exception("connection refused"))


class StateError(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class Probing:
    """A probe and a sleep on a fake clock: each sleep moves the clock, then runs ``during``
    (what the attempts in flight do meanwhile)."""

    def __init__(self, clock: Clock, answers: bool = True, error: Exception | None = None) -> None:
        self.clock = clock
        self.answers = answers
        self.error = error or refused()
        self.asked = 0
        self.during: list[object] = []  # a truthy item: an attempt fails in that interval

    async def probe(self) -> bool:
        self.asked += 1
        return self.answers

    async def sleep(self, seconds: float) -> None:
        self.clock.now += seconds
        if self.during and self.during.pop(0):
            self.outage.failed(RECORD, "e-9", self.error, 1.0)
        await asyncio.sleep(0)

    def outage_of(self, metrics: ProcessorMetrics) -> DatabaseOutage:
        self.outage = DatabaseOutage(
            "orders",
            metrics,
            consumer_group="g",
            clock=self.clock,
            probe=self.probe,
            sleep=self.sleep,
            probe_every_s=2.0,
        )
        return self.outage


def test_the_outage_ends_when_the_database_answers_the_probe_and_no_attempt_fails(caplog):
    # Attempts that hold their transaction long (a handler waiting 31 s) got through only that
    # long after the database was back: the processor said it was unavailable all that time.
    caplog.set_level(logging.INFO, logger="pipeline.processing")
    clock = Clock()
    probing = Probing(clock)
    metrics = ProcessorMetrics("orders")
    outage = probing.outage_of(metrics)
    probing.during = [True, True, False]  # attempts fail for two intervals, then none do

    async def scenario() -> None:
        outage.failed(RECORD, "e-1", refused(), 1.0)
        while outage.since is not None:
            await asyncio.sleep(0)

    asyncio.run(scenario())

    assert probing.asked == 1  # asked only once an interval passed without a failed attempt
    assert _said(caplog)[-1] == (
        "orders: the database answers again, after 6 s unavailable (3 failed attempts)"
    )
    assert "database" not in summary_line("orders", metrics.snapshot(), None)


def test_a_database_that_does_not_answer_the_probe_stays_unavailable():
    clock = Clock()
    probing = Probing(clock, answers=False)
    outage = probing.outage_of(ProcessorMetrics("orders"))

    async def scenario() -> None:
        outage.failed(RECORD, "e-1", refused(), 1.0)
        while probing.asked < 3:
            await asyncio.sleep(0)
        await outage.stop()

    asyncio.run(scenario())

    assert outage.since == 1000.0  # still the same outage


def test_a_database_reached_but_unable_to_work_is_not_declared_back_by_the_probe(caplog):
    # A disk full (53100) or a read-only database answers SELECT 1 all the while: the outage
    # "ended" at each quiet interval and began again at the next retry, a WARNING each round.
    caplog.set_level(logging.INFO, logger="pipeline.processing")
    clock = Clock()
    disk_full = OperationalError("INSERT", None, StateError("could not extend file", "53100"))
    probing = Probing(clock, error=disk_full)
    outage = probing.outage_of(ProcessorMetrics("orders"))
    probing.during = [False, True, False, False]  # quiet intervals between slow retries

    async def scenario() -> None:
        outage.failed(RECORD, "e-1", disk_full, 10.0)
        for _ in range(1000):  # the probing task's rounds (it ends with the outage)
            if not probing.during or outage.since is None:
                break
            await asyncio.sleep(0)
        await outage.stop()

    asyncio.run(scenario())

    assert probing.asked == 0
    assert outage.since == 1000.0  # one outage all along
    assert len(_said(caplog)) == 1  # its first line only
