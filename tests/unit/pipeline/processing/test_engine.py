"""The processing engine under finer control: backpressure, draining, database outages."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from pipeline.database import build_engine, migrate
from pipeline.dead_letters.letter import (
    HEADERS_OMITTED,
    VALUE_OMITTED,
    DeadLetter,
    DeadLetterTooLarge,
    read_dead_letter,
)
from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.logs.context import current_context
from pipeline.processing import Processor, Record, Reject, UnitOfWork
from pipeline.processing.engine import ProcessingEngine
from pipeline.processing.lanes import Work
from pipeline.processing.offsets import CommitPosition
from pipeline.retry import RetryPolicy
from pipeline.settings import DatabaseSettings, ProcessingSettings

TOPIC = "requests.orders"


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, KafkaMessage]] = []

    async def send(self, topic: str, message: KafkaMessage) -> None:
        self.sent.append((topic, message))


class Harness:
    """An engine with a list as its dead-letter topic, recorded commits and recorded waits."""

    def __init__(
        self,
        processor: Processor,
        database: Engine,
        sleep: Callable[[Harness, float], Awaitable[None]] | None = None,
        sink: Sink | None = None,
        **options: Any,
    ) -> None:
        self.sink = sink or Sink()
        self.commits: list[list[CommitPosition]] = []
        self.waits: list[float] = []
        values: dict[str, Any] = {"max_in_flight": 4, "retry": RetryPolicy(jitter=0)}
        values.update(options)
        self.engine = ProcessingEngine(
            processor,
            database=database,
            dead_letters=self.sink,
            on_commit=self.commits.append,
            settings=ProcessingSettings(**values),
            sleep=self._sleep,
        )
        self._then = sleep

    async def _sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self._then is not None:
            await self._then(self, seconds)

    @property
    def positions(self) -> list[int]:
        return [position for plan in self.commits for _, _, position in plan]


def record(offset: int, key: str) -> Record:
    message = encode(Event(source="/tests", type="Step", partitionkey=key, data={"n": offset}))
    return Record(TOPIC, 0, offset, message.key, message.value, message.headers)


async def settle() -> None:
    """Wait for every other task of the loop, the engine's late ones included."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    await asyncio.gather(*others)


def blocking_processor(release: threading.Event, fail: bool = False) -> tuple[Processor, list[int]]:
    """Key ``slow`` waits for ``release`` (then raises when ``fail``); other keys just pass."""
    calls: list[int] = []
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        calls.append(unit.record.offset)
        if event.partitionkey == "slow":
            assert release.wait(30), "the test never released the handler"
            if fail:
                raise RuntimeError("failed after the drain")

    return processor, calls


# --- backpressure -------------------------------------------------------------------------------


def test_submit_waits_while_max_buffered_records_are_unfinished(database: Engine) -> None:
    release = threading.Event()
    processor, calls = blocking_processor(release)
    harness = Harness(processor, database, max_buffered=2)

    async def scenario() -> None:
        engine = harness.engine
        await engine.submit(record(0, "slow"))
        await engine.submit(record(1, "slow"))  # waits behind offset 0 in its key's lane
        third = asyncio.ensure_future(engine.submit(record(2, "other")))
        done, _ = await asyncio.wait({third}, timeout=0.2)
        still_blocked = not done and engine.unfinished == 2

        release.set()
        await asyncio.wait_for(third, timeout=30)
        await engine.wait_idle()
        await engine.close()
        assert still_blocked

    asyncio.run(scenario())

    assert sorted(calls) == [0, 1, 2]
    assert harness.positions[-1] == 3


# --- draining -----------------------------------------------------------------------------------


def test_drain_commits_finished_work_and_forgets_what_did_not_finish_in_time(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    processor, calls = blocking_processor(release)
    harness = Harness(processor, database)
    caplog.set_level(logging.WARNING, logger="pipeline.processing")

    async def scenario() -> None:
        engine = harness.engine
        await engine.submit(record(0, "fast"))
        await engine.wait_idle()
        await engine.submit(record(1, "slow"))
        await engine.submit(record(2, "fast"))  # queued behind nothing, but the partition drains

        await engine.drain([(TOPIC, 0)], timeout_s=0.05)
        commits_after_drain = list(harness.positions)

        release.set()  # the forgotten attempt completes late
        await settle()
        await engine.close()
        assert commits_after_drain == [1]

    asyncio.run(scenario())

    assert harness.positions == [1]  # the late completion was not committed
    assert 1 in calls
    assert "still running after" in caplog.text
    assert "internal error" not in caplog.text


def test_an_attempt_failing_after_its_partition_was_drained_is_neither_retried_nor_dead_lettered(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    processor, calls = blocking_processor(release, fail=True)
    harness = Harness(processor, database, retry=RetryPolicy(max_attempts=2, jitter=0))
    caplog.set_level(logging.WARNING, logger="pipeline.processing")

    async def scenario() -> None:
        engine = harness.engine
        await engine.submit(record(0, "slow"))
        await engine.drain([(TOPIC, 0)], timeout_s=0.05)

        release.set()
        await settle()
        await engine.close()

    asyncio.run(scenario())

    assert calls == [0]  # the next owner of the partition handles it again, not this member
    assert harness.sink.sent == []
    assert harness.commits == []
    assert "internal error" not in caplog.text


# --- database outages ---------------------------------------------------------------------------


def test_an_unavailable_database_is_retried_without_limit_and_never_dead_lettered(
    database: Engine,
) -> None:
    calls = 0
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    # one attempt in all: a failure of the handler itself would be dead-lettered at once
    harness = Harness(processor, database, retry=RetryPolicy(max_attempts=1, jitter=0))

    async def scenario() -> None:
        await harness.engine.submit(record(0, "k1"))
        await harness.engine.wait_idle()
        await harness.engine.close()

    asyncio.run(scenario())

    snapshot = harness.engine.metrics.snapshot()
    assert calls == 6
    assert (snapshot.processed, snapshot.dead_lettered_total, snapshot.retries) == (1, 0, 0)
    assert harness.sink.sent == []
    assert len(harness.waits) == 5
    assert harness.positions == [1]


def test_an_outage_met_by_many_events_is_logged_once_then_its_end(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Each attempt of each event in flight logged a WARNING (about 50 lines in an outage's
    # first second with 16 in flight, on to the logs topic and Elasticsearch).
    failing = 20
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal failing
        if failing > 0:
            failing -= 1
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    harness = Harness(processor, database, retry=RetryPolicy(max_attempts=1, jitter=0))
    caplog.set_level(logging.INFO, logger="pipeline.processing")
    down_during: list[float | None] = []

    async def scenario() -> None:
        for offset in range(4):
            await harness.engine.submit(record(offset, f"k{offset}"))
        while not harness.waits:
            await asyncio.sleep(0.001)
        down_during.append(harness.engine.metrics.snapshot().database_down_s)
        await harness.engine.wait_idle()
        await harness.engine.close()

    asyncio.run(scenario())

    said = [r.getMessage() for r in caplog.records if "database" in r.getMessage()]
    assert len(harness.waits) == 20 and harness.engine.metrics.snapshot().processed == 4
    assert len(said) == 2, said  # no minute went by: the first failure, then the end
    assert said[0].startswith("orders: the database is unavailable (server closed the connection)")
    assert said[1].startswith("orders: the database answers again, after ")
    assert said[1].endswith("(20 failed attempts)")
    assert down_during[0] is not None
    assert harness.engine.metrics.snapshot().database_down_s is None


def test_a_retry_after_a_failed_commit_takes_a_place_again_so_no_more_handlers_run_at_once(
    database: Engine,
) -> None:
    """An async handler's event set aside for its commit, whose commit fails, runs its handler
    again only once it has a place of max_in_flight back (an outside review saw two handlers
    at once with one place: the retries ran set aside)."""
    running = 0
    most_at_once = 0
    failed_once: set[str] = set()
    processor = Processor("orders")

    def failing_first(key: str) -> Callable[[Any], None]:
        def write(session: Any) -> None:
            if key not in failed_once:
                failed_once.add(key)
                raise RuntimeError(f"the first write of {key} fails")

        return write

    @processor.handler(TOPIC)
    async def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal running, most_at_once
        running += 1
        most_at_once = max(most_at_once, running)
        await asyncio.sleep(0.005)
        running -= 1
        unit.write(failing_first(event.partitionkey or ""))

    harness = Harness(processor, database, max_in_flight=1)  # retries wait no time here

    async def scenario() -> None:
        for offset in range(6):
            await harness.engine.submit(record(offset, f"k{offset}"))
        await asyncio.wait_for(harness.engine.wait_idle(), 30)
        await harness.engine.close()

    asyncio.run(scenario())

    snapshot = harness.engine.metrics.snapshot()
    assert (snapshot.processed, snapshot.dead_lettered_total) == (6, 0)
    assert failed_once == {f"k{n}" for n in range(6)}  # every event's commit failed once
    assert most_at_once == 1


def test_an_outage_of_the_database_file_is_retried_until_it_is_back(
    database: Engine, tmp_path: Path
) -> None:
    processor = Processor("orders")
    handled: list[int] = []

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        handled.append(unit.record.offset)

    gone = tmp_path / "gone"  # the database's directory does not exist yet: it cannot open
    broken = build_engine(DatabaseSettings(url=f"sqlite:///{gone / 'engine.db'}"))

    async def repair_after_three_waits(harness: Harness, seconds: float) -> None:
        if len(harness.waits) == 3:  # the outage ends
            gone.mkdir()
            migrate(broken)

    harness = Harness(
        processor, broken, repair_after_three_waits, retry=RetryPolicy(max_attempts=1, jitter=0)
    )

    async def scenario() -> None:
        await harness.engine.submit(record(0, "k1"))
        await harness.engine.wait_idle()
        await harness.engine.close()

    asyncio.run(scenario())
    broken.dispose()

    assert handled == [0]
    assert len(harness.waits) == 3
    assert harness.sink.sent == []
    assert harness.positions == [1]


class ContextRecorder(logging.Handler):
    """Each record's message with the log context it was made in."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, dict[str, str | int]]] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), dict(current_context())))
        self.records.append(record)


def test_the_runtimes_retry_and_dead_letter_lines_name_the_event_they_are_about(
    database: Engine,
) -> None:
    # A retry line without the event's ids was missed by a search by correlation id.
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        raise RuntimeError("always")

    harness = Harness(processor, database, retry=RetryPolicy(max_attempts=2, jitter=0))
    event = Event(source="/tests", type="Step", partitionkey="k1", data={}, correlationid="corr-1")
    message = encode(event)
    recorder = ContextRecorder()
    engine_logger = logging.getLogger("pipeline.processing")
    engine_logger.addHandler(recorder)
    previous_level = engine_logger.level
    engine_logger.setLevel(logging.INFO)

    async def scenario() -> None:
        await harness.engine.submit(
            Record(TOPIC, 0, 7, message.key, message.value, message.headers)
        )
        await harness.engine.wait_idle()
        await harness.engine.close()

    try:
        asyncio.run(scenario())
    finally:
        engine_logger.removeHandler(recorder)
        engine_logger.setLevel(previous_level)

    about = [(line, context) for line, context in recorder.lines if event.id in line]
    assert [line.split(":")[1].split()[0] for line, _ in about] == ["attempt", "dead-lettered"]
    for line, context in about:
        assert context["event_id"] == event.id, line
        assert context["correlation_id"] == "corr-1", line
        assert (context["topic"], context["partition"], context["offset"]) == (TOPIC, 0, 7)
        assert context["event_type"] == "Step"
    dead_lettered = next(record for record in recorder.records if "dead-lettered" in record.msg)
    assert (dead_lettered.error_type, dead_lettered.error_message) == ("RuntimeError", "always")


# --- an internal error ------------------------------------------------------------------------


def test_an_internal_error_is_logged_and_the_record_handled_again_not_held_for_ever(
    database: Engine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine's own bug (none known: a model validator's TypeError was one) used to leave
    # the record unfinished: its key and its partition's commits held, without a retry.
    calls: list[int] = []
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        calls.append(unit.record.offset)

    harness = Harness(processor, database)
    handle = harness.engine._handle
    broken = {"times": 2}

    async def flaky_handle(payload: Record, work: Work[Record]) -> None:
        if broken["times"]:
            broken["times"] -= 1
            raise RuntimeError("a bug in the engine")
        await handle(payload, work)

    monkeypatch.setattr(harness.engine, "_handle", flaky_handle)

    async def scenario() -> None:
        engine = harness.engine
        engine.assigned([(TOPIC, 0)])
        await engine.submit(record(0, "k"))
        await engine.submit(record(1, "k"))
        await asyncio.wait_for(engine.wait_idle(), 10)
        await engine.close()

    with caplog.at_level(logging.ERROR, logger="pipeline.processing"):
        asyncio.run(scenario())

    assert calls == [0, 1]
    assert harness.positions[-1] == 2
    errors = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert len(errors) == 2 and "trying again in" in errors[0]


def test_a_dead_letter_acknowledged_after_close_gives_up_instead_of_retrying_for_ever(
    database: Engine,
) -> None:
    # Noting it in the inbox needs the worker threads close() let go: it failed, and was tried
    # again for ever.
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        raise RuntimeError("always")

    class HeldSink:
        acknowledge = asyncio.Event()

        async def send(self, topic: str, message: KafkaMessage) -> None:
            await self.acknowledge.wait()

    sink = HeldSink()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    engine = ProcessingEngine(
        processor,
        database=database,
        dead_letters=sink,
        on_commit=lambda plan: None,
        settings=ProcessingSettings(retry=RetryPolicy(max_attempts=1, jitter=0)),
        sleep=sleep,
    )

    async def scenario() -> None:
        engine.assigned([(TOPIC, 0)])
        await engine.submit(record(0, "k"))
        await asyncio.sleep(0.2)  # its dead letter waits for Kafka
        await engine.close(0.01)
        sink.acknowledge.set()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        await asyncio.wait_for(asyncio.gather(*others, return_exceptions=True), 5)

    asyncio.run(scenario())

    assert len(waits) <= 1


# --- a dead letter too large for its topic --------------------------------------------------------


class SizeLimitedSink(Sink):
    """A dead-letter topic that refuses a message whose value is over ``limit`` bytes, as Kafka
    does (max.message.bytes), every time."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.refused = 0

    async def send(self, topic: str, message: KafkaMessage) -> None:
        size = len(message.value or b"") + sum(len(n) + len(v or b"") for n, v in message.headers)
        if size > self.limit:
            self.refused += 1
            raise DeadLetterTooLarge("Broker: Message size too large")
        await super().send(topic, message)


def test_a_dead_letter_too_large_for_its_topic_goes_without_its_value_and_the_partition_moves_on(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Refused for ever, it used to be tried again every 10 s: the partition's commits held.
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        if len(event.data["pad"]) > 10:
            raise Reject("too much padding")

    harness = Harness(processor, database, sink=SizeLimitedSink(limit=12_000))
    huge = encode(Event(source="/tests", type="Step", partitionkey="k", data={"pad": "x" * 15_000}))
    small = encode(Event(source="/tests", type="Step", partitionkey="k2", data={"pad": "x"}))

    async def scenario() -> None:
        await harness.engine.submit(Record(TOPIC, 0, 0, huge.key, huge.value, huge.headers))
        await harness.engine.submit(Record(TOPIC, 0, 1, small.key, small.value, small.headers))
        await harness.engine.wait_idle()
        await harness.engine.close()

    with caplog.at_level(logging.ERROR, logger="pipeline.processing"):
        asyncio.run(scenario())

    [(topic, letter)] = harness.sink.sent
    assert topic == f"{TOPIC}.dlq" and harness.sink.refused == 1
    assert letter.value is None and letter.key == huge.key
    headers = dict(letter.headers)
    assert headers[VALUE_OMITTED] == str(len(huge.value or b"")).encode()
    assert headers["dlq.original.offset"] == b"0" and headers["dlq.reason"] == b"rejected"
    assert harness.positions[-1] == 2  # both handled and committed: nothing held
    assert "sent without its value (15,0" in caplog.text and f"{TOPIC}[0]@0" in caplog.text
    read = read_dead_letter(topic, 0, 0, letter.key, letter.value, letter.headers)
    assert isinstance(read, DeadLetter) and read.value_omitted == len(huge.value or b"")


def test_a_dead_letter_still_too_large_without_its_value_goes_without_its_large_headers(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # A 30 KB header kept the letter over the limit without its value: it was tried for ever.
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        raise Reject("no")

    harness = Harness(processor, database, sink=SizeLimitedSink(limit=12_000))
    message = encode(Event(source="/tests", type="Step", partitionkey="k", data={"n": 1}))
    headers = [*message.headers, ("x-huge", b"h" * 30_000)]

    async def scenario() -> None:
        await harness.engine.submit(Record(TOPIC, 0, 0, message.key, message.value, headers))
        await harness.engine.wait_idle()
        await harness.engine.close()

    with caplog.at_level(logging.ERROR, logger="pipeline.processing"):
        asyncio.run(scenario())

    [(_, letter)] = harness.sink.sent
    names = [name for name, _ in letter.headers]
    assert "x-huge" not in names and "ce_id" in names  # what names the event is kept
    assert dict(letter.headers)[HEADERS_OMITTED] == b"1"
    assert harness.sink.refused == 2 and harness.positions[-1] == 1
    assert "sent without its value and its headers over 1 KiB" in caplog.text
    read = read_dead_letter(TOPIC + ".dlq", 0, 0, letter.key, letter.value, letter.headers)
    assert isinstance(read, DeadLetter) and read.headers_omitted == 1
    assert read.event_id is not None
