"""NotYet, continued: an event that cannot be handled yet gives its place of max_in_flight up
while it waits (its key still held), a drain or the stop ends its wait at once, its waits are
never shorter than a floor; and the driver replays a keyless recorded message to its recorded
partition, as ``pipeline replay`` does."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.processing import NotYet, Processor, Record, UnitOfWork
from pipeline.processing.driver import ProcessorTestDriver
from pipeline.processing.engine import ProcessingEngine
from pipeline.processing.harness import PipelineHarness
from pipeline.processing.offsets import CommitPosition
from pipeline.replay.recording import RecordedMessage
from pipeline.retry import RetryPolicy
from pipeline.settings import ProcessingSettings
from tests.support.driving import driver_settings, step_event

TOPIC = "requests.orders"


class _Sink:
    async def send(self, topic: str, message: Any) -> None:
        raise AssertionError(f"nothing is dead-lettered here ({topic})")


def _record(offset: int, key: str) -> Record:
    message = encode(Event(source="/tests", type="Step", partitionkey=key, data={"key": key}))
    return Record(TOPIC, 0, offset, message.key, message.value, message.headers)


# --- its place of max_in_flight goes to other keys while it waits ------------------------------


@pytest.mark.timeout(60)
def test_events_that_cannot_be_handled_yet_leave_their_places_to_the_other_keys() -> None:
    processor = Processor("orders")
    handled: list[tuple[str, int]] = []

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        if event.data["key"] in ("k1", "k2"):
            raise NotYet("saga Trip version 2 is not in this registry yet")
        handled.append((event.data["key"], event.data["seq"]))

    # As many places as keys that cannot be handled yet: they held them all.
    driver = ProcessorTestDriver(
        processor, settings=driver_settings(max_in_flight=2, sync_group_wait_ms=0)
    )
    try:
        driver.send(TOPIC, step_event("k1", 0))
        driver.send(TOPIC, step_event("k2", 1))
        driver.send(TOPIC, step_event("k1", 2))  # behind k1's first: waits
        driver.send(TOPIC, step_event("k3", 3))
        driver.send(TOPIC, step_event("k3", 4))

        snapshot = driver.run()

        assert handled == [("k3", 3), ("k3", 4)]  # the other key went on
        assert (snapshot.processed, snapshot.dead_lettered_total) == (2, 0)
        assert driver.committed.get((TOPIC, 0), 0) == 0  # the waiting ones: uncommitted
    finally:
        driver.close()


@pytest.mark.timeout(60)
def test_a_waiting_event_whose_wait_ended_takes_a_place_back_while_others_retry() -> None:
    """One place: k1 cannot be handled yet, k2 takes the place and fails twice (its backoffs
    move the clock); k1's waits end meanwhile and it waits for the place back, which the
    driver counts as waiting (not as running): the clock goes on, and both get handled."""
    processor = Processor("orders")
    handled: list[str] = []
    failures = {"k2": 2}
    ready_at: list[Any] = []

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        key = event.data["key"]
        if key == "k1" and driver.clock() < ready_at[0]:
            raise NotYet("what it needs comes in 0.2 s")
        if failures.get(key, 0) > 0:
            failures[key] -= 1
            raise RuntimeError("flaky")
        handled.append(key)

    retry = RetryPolicy(max_attempts=5, initial_backoff_s=0.1, multiplier=2, jitter=0)
    driver = ProcessorTestDriver(
        processor, settings=driver_settings(max_in_flight=1, sync_group_wait_ms=0, retry=retry)
    )
    try:
        ready_at.append(driver.clock() + timedelta(seconds=0.2))
        driver.send(TOPIC, step_event("k1", 0))
        driver.send(TOPIC, step_event("k2", 1))

        snapshot = driver.run()

        assert sorted(handled) == ["k1", "k2"]
        assert (snapshot.processed, snapshot.dead_lettered_total) == (2, 0)
        assert driver.committed[(TOPIC, 0)] == 2
    finally:
        driver.close()


# --- a drain or the stop ends its wait at once -----------------------------------------------


def _processor(raise_: type[Exception] | None, calls: list[int]) -> Processor:
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        calls.append(unit.record.offset)
        if event.data["key"] == "k1":
            if raise_ is NotYet:
                raise NotYet("saga Trip version 2 is not in this registry yet")
            raise OperationalError("SELECT 1", None, Exception("connection refused"))

    return processor


@pytest.mark.parametrize("kind", ["not_yet", "outage", "close"])
def test_a_drain_ends_the_wait_of_an_event_that_cannot_be_handled_yet_at_once(
    database: Engine, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """The backoff never ends on its own here: the drain (or the close) must end it. Before,
    the drain waited for it its whole ``timeout_s`` and said it was still running."""
    calls: list[int] = []
    commits: list[list[CommitPosition]] = []
    backoffs: list[float] = []
    retry = RetryPolicy(max_attempts=1, initial_backoff_s=60, max_backoff_s=60, jitter=0)

    async def forever(seconds: float) -> None:
        backoffs.append(seconds)
        await asyncio.get_running_loop().create_future()  # never resolved

    engine = ProcessingEngine(
        _processor(OperationalError if kind == "outage" else NotYet, calls),
        database=database,
        dead_letters=_Sink(),
        on_commit=commits.append,
        settings=ProcessingSettings(max_in_flight=4, retry=retry, sync_group_wait_ms=0),
        sleep=forever,
    )
    caplog.set_level(logging.INFO, logger="pipeline.processing")

    async def scenario() -> int:
        await engine.submit(_record(0, "k1"))
        await engine.submit(_record(1, "k2"))  # handled: the commit stays before offset 0
        while len(backoffs) < 1 or 1 not in calls:
            await asyncio.sleep(0.01)
        if kind == "close":
            await engine.close(timeout_s=1)
        else:
            await engine.drain([(TOPIC, 0)], timeout_s=1)
        late = await engine.finish_late(0)
        await engine.close()
        return late

    late = asyncio.run(scenario())

    assert late == 0  # nothing left running
    assert calls.count(0) == 1  # not tried again by the drain
    assert [position for plan in commits for _, _, position in plan] in ([], [0])
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.processing"]
    assert not [line for line in said if "still running" in line], said


@pytest.mark.parametrize("kind", ["not_yet", "outage"])
def test_an_attempt_running_when_a_drain_begins_and_then_waiting_ends_with_the_drain(
    database: Engine, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """A code review: the drain ended the backoffs there were when it began; an attempt then
    running, which found it must wait, slept past the drain (the drain waited its whole timeout
    and said it was still running), then took a place back for a work the drain had forgotten
    (an ERROR with a traceback)."""
    entered, release = threading.Event(), threading.Event()
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        entered.set()
        release.wait(5)
        if kind == "not_yet":
            raise NotYet("version 2 not here")
        raise OperationalError("SELECT 1", None, Exception("connection refused"))

    retry = RetryPolicy(max_attempts=1, initial_backoff_s=0.3, max_backoff_s=0.3, jitter=0)
    engine = ProcessingEngine(
        processor,
        database=database,
        dead_letters=_Sink(),
        on_commit=lambda plan: None,
        settings=ProcessingSettings(max_in_flight=4, retry=retry, sync_group_wait_ms=0),
    )
    caplog.set_level(logging.INFO, logger="pipeline.processing")

    async def scenario() -> int:
        await engine.submit(_record(0, "k1"))
        while not entered.is_set():
            await asyncio.sleep(0.01)
        asyncio.get_running_loop().call_later(0.1, release.set)  # ends during the drain
        await engine.drain([(TOPIC, 0)], timeout_s=5)
        await asyncio.sleep(0.5)  # past the backoff: nothing of the drained event may run
        late = len(engine._late)
        await engine.close(timeout_s=0)
        return late

    assert asyncio.run(scenario()) == 0
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert not [line for line in said if "still running" in line[1]], said
    assert not [line for line in said if line[0] == "ERROR"], said


# --- never a spin ----------------------------------------------------------------------------


def test_the_waits_of_an_event_that_cannot_be_handled_yet_have_a_floor(database: Engine) -> None:
    calls: list[int] = []
    waits: list[float] = []
    left = {"waits": 3}
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        calls.append(unit.record.offset)
        if left["waits"] > 0:
            left["waits"] -= 1
            raise NotYet("not yet")

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    no_backoff = RetryPolicy(max_attempts=1, initial_backoff_s=0, max_backoff_s=0, jitter=0)
    engine = ProcessingEngine(
        processor,
        database=database,
        dead_letters=_Sink(),
        on_commit=lambda plan: None,
        settings=ProcessingSettings(max_in_flight=2, retry=no_backoff, sync_group_wait_ms=0),
        sleep=sleep,
    )

    async def scenario() -> None:
        await engine.submit(_record(0, "k1"))
        await engine.wait_idle()
        await engine.close()

    asyncio.run(scenario())

    assert calls == [0, 0, 0, 0]
    assert waits == [0.1] * 3  # the policy's 0, floored (waiting.WAIT_FLOOR_S)


# --- a recording replayed: a keyless message to its recorded partition -----------------------


def _recorded(partition: int, offset: int, *, key: bytes | None) -> RecordedMessage:
    message = encode(step_event("k", offset))
    return RecordedMessage(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        key=key,
        value=message.value,
        headers=tuple(message.headers),
        timestamp_ms=1_767_225_600_000 + offset,
    )


def _reader() -> Processor:
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        pass

    return processor


def test_the_driver_replays_a_keyless_recorded_message_to_its_recorded_partition() -> None:
    driver = ProcessorTestDriver(_reader(), partitions={TOPIC: 3})
    try:
        recording = [_recorded(p, n, key=None) for n, p in enumerate([0, 0, 0, 1, 4, 5])]
        keyed = _recorded(0, 6, key=b"order-7")

        records = driver.send_recording([*recording, keyed])

        # Its recorded partition, modulo the 3 here (pipeline/replay/routing.py).
        assert [r.partition for r in records[:-1]] == [0, 0, 0, 1, 1, 2]
        assert records[-1].partition == driver.partition_for(TOPIC, b"order-7")  # by its key
        # A new keyless message still goes round robin, as a producer spreads it.
        keyless = [KafkaMessage(key=None, value=r.value, headers=[]) for r in records[:3]]
        sent = [driver.send(TOPIC, message) for message in keyless]
        assert sorted(r.partition for r in sent) == [0, 1, 2]
    finally:
        driver.close()


def test_the_harness_replays_a_keyless_recorded_message_to_its_recorded_partition() -> None:
    harness = PipelineHarness([_reader()], partitions={TOPIC: 2})
    try:
        harness.send_recording([_recorded(p, n, key=None) for n, p in enumerate([1, 1, 1, 3])])

        (driver,) = harness.drivers
        assert [len(driver.topics[(TOPIC, p)]) for p in (0, 1)] == [0, 4]
    finally:
        harness.close()
