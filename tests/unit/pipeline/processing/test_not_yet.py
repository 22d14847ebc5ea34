"""NotYet: an event that cannot be handled yet waits, tried again without limit, never
dead-lettered, its key's later events behind it, and no database outage."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event, encode
from pipeline.processing import NotYet, Processor, Record, UnitOfWork
from pipeline.processing.driver import ProcessorTestDriver
from pipeline.processing.engine import ProcessingEngine
from pipeline.processing.offsets import CommitPosition
from pipeline.processing.waiting import Waiting
from pipeline.retry import RetryPolicy
from pipeline.settings import ProcessingSettings
from tests.support.driving import driver_settings, step_event

TOPIC = "requests.orders"
WAITS = 12  # beyond any retry limit here (one attempt) and the backoff's 8th step


class _Sink:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, topic: str, message: Any) -> None:
        self.sent.append((topic, message))


def _record(offset: int, key: str) -> Record:
    message = encode(Event(source="/tests", type="Step", partitionkey=key, data={"n": offset}))
    return Record(TOPIC, 0, offset, message.key, message.value, message.headers)


def _processor(kind: str, calls: list[int]) -> Processor:
    """Key ``k1``'s offset 0 cannot be handled for its first ``WAITS`` attempts: its handler
    raises NotYet (or, ``async_batched``, the write it left does)."""
    processor = Processor("orders")
    left = {"waits": WAITS}

    def must_wait(offset: int) -> bool:
        """Whether this attempt of ``offset`` cannot be handled yet."""
        if offset == 0 and left["waits"] > 0:
            left["waits"] -= 1
            return True
        return False

    def not_yet(offset: int) -> None:
        if must_wait(offset):
            raise NotYet("saga Trip version 2 is not in this registry yet")

    if kind == "async_handler":

        @processor.handler(TOPIC)
        async def handle_async(event: Event, unit: UnitOfWork) -> None:
            calls.append(unit.record.offset)
            not_yet(unit.record.offset)
            unit.write(lambda session: None)

    elif kind == "async_batched":
        # The attempt decides; its batched write raises, in its group and then alone.
        def batch(session: Session, waits: list[bool]) -> None:
            if any(waits):
                raise NotYet("saga Trip version 2 is not in this registry yet")

        @processor.handler(TOPIC)
        async def handle_batched(event: Event, unit: UnitOfWork) -> None:
            calls.append(unit.record.offset)
            unit.write_batched(batch, must_wait(unit.record.offset))

    else:

        @processor.handler(TOPIC)
        def handle(event: Event, unit: UnitOfWork) -> None:
            calls.append(unit.record.offset)
            not_yet(unit.record.offset)

    return processor


@pytest.mark.parametrize(
    ("kind", "group_wait_ms"),
    [
        ("sync", 0.0),  # the per-record attempt
        ("sync_grouped", 10.0),  # a group of synchronous handlers first
        ("async_handler", 10.0),  # the async group path, the handler raising
        ("async_batched", 10.0),  # the async group commit, its batched write raising
    ],
)
def test_an_event_that_cannot_be_handled_yet_waits_without_limit_and_its_key_behind_it(
    database: Engine, caplog: pytest.LogCaptureFixture, kind: str, group_wait_ms: float
) -> None:
    calls: list[int] = []
    waits: list[float] = []
    commits: list[list[CommitPosition]] = []
    sink = _Sink()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    retry = RetryPolicy(max_attempts=1, initial_backoff_s=0.1, max_backoff_s=10, jitter=0)
    engine = ProcessingEngine(
        _processor(kind, calls),
        database=database,
        dead_letters=sink,
        on_commit=commits.append,
        settings=ProcessingSettings(max_in_flight=4, retry=retry, sync_group_wait_ms=group_wait_ms),
        sleep=sleep,
    )
    caplog.set_level(logging.INFO, logger="pipeline.processing")

    async def scenario() -> None:
        await engine.submit(_record(0, "k1"))
        await engine.submit(_record(1, "k1"))  # the same key: waits behind offset 0
        await engine.submit(_record(2, "k2"))
        await asyncio.wait_for(engine.wait_idle(), 30)
        await engine.close()

    asyncio.run(scenario())

    snapshot = engine.metrics.snapshot()
    # One attempt allowed, yet tried WAITS + 1 times, and never dead-lettered.
    assert calls.count(0) == WAITS + 1
    k1 = [offset for offset in calls if offset in (0, 1)]
    assert k1 == [0] * (WAITS + 1) + [1]  # its key's next event waited for it
    assert (snapshot.processed, snapshot.dead_lettered_total, snapshot.retries) == (3, 0, 0)
    assert sink.sent == []
    # The outage's backoff, capped at its 8th step: 0.1 s doubling up to 10 s.
    assert waits == pytest.approx([min(0.1 * 2 ** min(n, 7), 10) for n in range(WAITS)])
    assert snapshot.database_down_s is None  # no database outage
    assert [position for plan in commits for _, _, position in plan][-1] == 3
    said = [r for r in caplog.records if r.name == "pipeline.processing"]
    warnings = [r.getMessage() for r in said if r.levelno == logging.WARNING]
    # The first wait, once; the later ones within a minute are not said.
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("orders: event ")
    assert (
        "cannot be handled yet (saga Trip version 2 is not in this registry yet)" in (warnings[0])
    )
    assert "tried again without limit" in warnings[0]
    infos = [r.getMessage() for r in said if "handled after waiting" in r.getMessage()]
    assert len(infos) == 1 and infos[0].endswith(f"({WAITS} waits)")
    assert not [r for r in said if "database" in r.getMessage()]


def test_the_later_waits_are_said_at_most_once_a_minute_with_their_count_and_latest_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    waiting = Waiting("orders", consumer_group="orders", clock=lambda: now[0])
    record = _record(0, "k1")
    caplog.set_level(logging.INFO, logger="pipeline.processing")

    since = waiting.waits(record, "e-1", NotYet("first reason"), 0.2, None)
    for _ in range(5):
        now[0] += 10
        assert waiting.waits(record, "e-1", NotYet("later reason"), 0.4, since) == since
    now[0] += 15  # 65 s after the first line
    waiting.waits(record, "e-1", NotYet("latest reason"), 0.8, since)
    now[0] += 1
    waiting.waits(record, "e-1", NotYet("quiet again"), 0.8, since)
    waiting.handled(record, "e-1", since, 8)

    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "event e-1 cannot be handled yet (first reason)" in lines[0]
    assert lines[1] == (
        "orders: events still wait to be handled (6 waits since the last line); latest: "
        "event e-1, waiting for 65 s: latest reason"
    )
    assert lines[2] == "orders: event e-1 handled after waiting 66 s (8 waits)"


def test_an_events_first_wait_is_said_once_though_a_drain_ended_its_wait_in_between(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An outside re-check: 20 replies waiting said 40 first-wait WARNINGs over two rebalances
    # (each drain ended their waits, and their next handling began with no first wait known).
    now = [100.0]
    waiting = Waiting("orders", consumer_group="orders", clock=lambda: now[0])
    record = _record(0, "k1")
    caplog.set_level(logging.INFO, logger="pipeline.processing")

    first = waiting.waits(record, "e-1", NotYet("not here"), 0.2, None)
    now[0] += 5  # drained, then handled again from the start: no "since" known to it
    again = waiting.waits(record, "e-1", NotYet("not here"), 0.2, None)
    now[0] += 5
    other = waiting.waits(record, "e-2", NotYet("not here"), 0.2, None)
    waiting.handled(record, "e-1", again, 1)
    now[0] += 5
    after = waiting.waits(record, "e-1", NotYet("not here"), 0.2, None)  # a new wait, later

    assert again == first == 100.0 and other == 110.0 and after == 115.0
    firsts = [r.getMessage() for r in caplog.records if "cannot be handled yet" in r.getMessage()]
    assert [line.split(" cannot")[0] for line in firsts] == [
        "orders: event e-1",
        "orders: event e-2",
        "orders: event e-1",
    ]


def test_the_driver_leaves_an_event_that_cannot_be_handled_yet_and_handles_it_once_it_can() -> None:
    processor = Processor("orders")
    handled: list[int] = []
    ready_at: list[Any] = []

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        if event.data["seq"] == 0 and driver.clock() < ready_at[0]:
            raise NotYet("what it needs comes at 10:00")
        handled.append(event.data["seq"])

    once = RetryPolicy(max_attempts=1, initial_backoff_s=0.1, jitter=0)
    driver = ProcessorTestDriver(processor, settings=driver_settings(retry=once))
    try:
        ready_at.append(driver.clock() + timedelta(minutes=10))
        started = driver.clock()
        driver.send(TOPIC, step_event("k1", 0))
        driver.send(TOPIC, step_event("k1", 1))  # behind it
        driver.send(TOPIC, step_event("k2", 2))

        snapshot = driver.run()  # returns: only an event that cannot be handled yet is left

        assert handled == [2]
        assert (snapshot.processed, snapshot.dead_lettered_total) == (1, 0)
        assert driver.dead_letters(TOPIC) == []
        assert driver.committed.get((TOPIC, 0), 0) == 0  # neither it nor its key's next
        assert driver.clock() == started  # the clock did not move for its waits alone

        driver.run()  # still not: tried again, left again
        assert handled == [2]

        driver.clock.advance(600)
        snapshot = driver.run()

        assert handled == [2, 0, 1]  # the key's events in order, the other one not again
        assert (snapshot.processed, snapshot.dead_lettered_total) == (3, 0)
        assert driver.committed[(TOPIC, 0)] == 3
    finally:
        driver.close()
