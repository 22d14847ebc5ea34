"""The broker-free driver and harness: partitions by murmur2, virtual time for retries and saga
deadlines, processors wired through the outbox, inspection, and recordings as input."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy.orm import Session

from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.kafka.partitioner import partition_for
from pipeline.processing import Processor, ProcessorTestDriver, Reject, UnitOfWork
from pipeline.processing.clock import VirtualClock
from pipeline.processing.harness import PipelineHarness
from pipeline.replay.recording import RecordedMessage, format_line, parse_line
from pipeline.retry import RetryPolicy
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor
from pipeline.sagas.participant import SagaParticipant
from pipeline.settings import ProcessingSettings
from tests.support.driving import step_event

TOPIC = "harness.input"
OUTPUT = "harness.output"


def settings(backoff_s: float = 60.0, attempts: int = 3) -> ProcessingSettings:
    return ProcessingSettings(
        max_in_flight=8,
        retry=RetryPolicy(
            max_attempts=attempts,
            initial_backoff_s=backoff_s,
            multiplier=2,
            max_backoff_s=3600,
            jitter=0,
        ),
    )


@pytest.fixture
def drivers() -> Iterator[list[ProcessorTestDriver]]:
    made: list[ProcessorTestDriver] = []
    yield made
    for driver in made:
        driver.close()


def recording_processor(seen: list[tuple[str, int, int]]) -> Processor:
    processor = Processor("recorder")

    @processor.handler(TOPIC)
    def record(event: Event, unit: UnitOfWork) -> None:
        seen.append((event.data["key"], event.data["seq"], unit.record.partition))

    return processor


def test_keyed_messages_land_on_their_murmur2_partition_in_order(drivers):
    seen: list[tuple[str, int, int]] = []
    driver = ProcessorTestDriver(recording_processor(seen), partitions={TOPIC: 6})
    drivers.append(driver)
    keys = [f"order-{n}" for n in range(40)]
    records = [driver.send(TOPIC, step_event(key, seq)) for seq in range(3) for key in keys]

    driver.run()

    assert {r.key: r.partition for r in records} == {
        key.encode(): partition_for(key.encode(), 6) for key in keys
    }
    assert len({r.partition for r in records}) == 6  # 40 keys spread over every partition
    for key in keys:
        assert [seq for k, seq, _ in seen if k == key] == [0, 1, 2]
    assert driver.committed == {(TOPIC, p): len(driver.topics[(TOPIC, p)]) for p in range(6)}


def test_keyless_messages_go_round_robin_and_a_told_partition_is_kept(drivers):
    driver = ProcessorTestDriver(recording_processor([]), partitions=3)
    drivers.append(driver)
    keyless = KafkaMessage(key=None, value=b"{}", headers=[])

    partitions = [driver.send(TOPIC, keyless).partition for _ in range(5)]
    told = driver.send(TOPIC, step_event("k", 0), partition=2)

    assert partitions == [0, 1, 2, 0, 1]
    assert told.partition == 2
    assert driver.partitions_of(TOPIC) == 3 and driver.partitions_of("other") == 3


def flaky_processor(failures: dict[str, int], clock: VirtualClock, attempts_at: list) -> Processor:
    processor = Processor("flaky")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        key = event.data["key"]
        attempts_at.append((key, clock.now))
        if failures.get(key, 0) > 0:
            failures[key] -= 1
            raise RuntimeError("the downstream service is away")

    return processor


def test_retry_backoffs_pass_on_the_virtual_clock_not_in_real_time(drivers):
    clock = VirtualClock()
    start = clock.now
    attempts_at: list = []
    driver = ProcessorTestDriver(
        flaky_processor({"k1": 2}, clock, attempts_at),
        settings=settings(backoff_s=600),  # 10 then 20 minutes
        clock=clock,
    )
    drivers.append(driver)
    driver.send(TOPIC, step_event("k1", 0))

    snapshot = driver.run()

    assert snapshot.processed == 1 and snapshot.retries == 2
    assert driver.waits == [600, 1200]
    assert [moment - start for _, moment in attempts_at] == [
        timedelta(0),
        timedelta(minutes=10),
        timedelta(minutes=30),
    ]
    assert clock.now - start == timedelta(minutes=30)


def test_backoffs_of_different_keys_overlap_in_virtual_time(drivers):
    clock = VirtualClock()
    start = clock.now
    attempts_at: list = []
    driver = ProcessorTestDriver(
        flaky_processor({"k1": 1, "k2": 1, "k3": 1}, clock, attempts_at),
        settings=settings(backoff_s=60),
        clock=clock,
    )
    drivers.append(driver)
    for key in ("k1", "k2", "k3"):
        driver.send(TOPIC, step_event(key, 0))

    assert driver.run().processed == 3

    # Three keys waited 60 s each, at the same time: a minute passed, not three.
    assert clock.now - start == timedelta(minutes=1)
    retried = sorted((key, moment - start) for key, moment in attempts_at[3:])
    assert retried == [(key, timedelta(minutes=1)) for key in ("k1", "k2", "k3")]


def test_a_backoff_starts_when_the_attempt_ends_on_the_clock(drivers):
    clock = VirtualClock()
    start = clock.now
    attempts_at: list = []
    processor = Processor("slow")
    failures = {"k1": 1}

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        attempts_at.append(clock.now)
        if failures["k1"]:
            failures["k1"] -= 1
            clock.advance(90)  # the attempt itself took 90 virtual seconds, then failed
            raise RuntimeError("timed out")

    driver = ProcessorTestDriver(processor, settings=settings(backoff_s=60), clock=clock)
    drivers.append(driver)
    driver.send(TOPIC, step_event("k1", 0))

    assert driver.run().processed == 1
    assert [moment - start for moment in attempts_at] == [timedelta(0), timedelta(seconds=150)]


def test_a_clock_moved_by_a_busy_handler_wakes_a_waiting_retry_at_once(drivers):
    # k1 fails and waits 60 s; k2's handler, still running, moves the clock 10 minutes and
    # waits for k1's retry: it comes while k2 is busy, without the driver jumping the clock.
    clock = VirtualClock()
    k1_retried = threading.Event()
    processor = Processor("busy")
    retried_while_k2_ran: list[bool] = []

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        if event.data["key"] == "k1":
            if not driver.waits:
                raise RuntimeError("away")
            k1_retried.set()
            return
        deadline = time.monotonic() + 30
        while not driver.waits and time.monotonic() < deadline:  # k1 waits for its backoff
            time.sleep(0.001)
        clock.advance(600)
        retried_while_k2_ran.append(k1_retried.wait(timeout=30))

    driver = ProcessorTestDriver(processor, settings=settings(backoff_s=60), clock=clock)
    drivers.append(driver)
    driver.send(TOPIC, step_event("k1", 0))
    driver.send(TOPIC, step_event("k2", 0))

    assert driver.run().processed == 2
    assert retried_while_k2_ran == [True]


# --- several processors and a saga -------------------------------------------------------------


class Data(BaseModel):
    order_id: str


def reserve_registry(**step_options: Any) -> SagaRegistry:
    """The Reserve saga: one step, "hold" at the warehouse, 30 minutes per attempt."""
    hold = Step(
        "hold",
        participant="warehouse",
        action=lambda d: Call("Hold", {"order_id": d.order_id}),
        timeout_s=30 * 60,
        **step_options,
    )
    return SagaRegistry([SagaDefinition("Reserve", version=1, data_model=Data, steps=[hold])])


registry = reserve_registry()


def saga_harness(
    *, warehouse_answers: bool, **options
) -> tuple[PipelineHarness, SagaOrchestrator, list[str]]:
    orchestrator = SagaOrchestrator(registry)
    orders = Processor("orders")
    held: list[str] = []

    @orders.handler(TOPIC)
    def place(event: Event, unit: UnitOfWork) -> None:
        order_id = event.data["key"]
        orchestrator.start(unit.session, "Reserve", order_id, {"order_id": order_id})
        unit.emit(
            Event(source="/orders", type="OrderPlaced", data={"order_id": order_id}),
            aggregate_type="order",
            aggregate_id=order_id,
            topic=OUTPUT,
        )

    warehouse = Processor("warehouse")
    participant = SagaParticipant(warehouse, "warehouse")

    @participant.command("Hold")
    def hold(command, unit):
        held.append(command.data["order_id"])
        return {"held": True}

    processors = [orders, orchestrator_processor(orchestrator)]
    if warehouse_answers:
        processors.append(warehouse)
    harness = PipelineHarness(processors, clocked=[orchestrator], **options)
    return harness, orchestrator, held


def test_processors_are_wired_through_the_outbox_and_the_saga_completes():
    harness, _, held = saga_harness(warehouse_answers=True, partitions=6)
    with harness:
        for n in range(10):
            harness.send(TOPIC, step_event(f"o-{n}", 0))
        harness.run_until_idle()

        states = harness.sagas()
        assert {saga_id: s.status for saga_id, s in states.items()} == {
            f"o-{n}": "completed" for n in range(10)
        }
        assert sorted(held) == sorted(f"o-{n}" for n in range(10))
        assert len(harness.published(OUTPUT)) == 10
        types = [e.type for e in harness.published("saga.events") if e.partitionkey == "o-3"]
        assert types[0] == "pipeline.saga.saga_started"
        assert types[-1] == "pipeline.saga.saga_completed"
        # Every input was taken once by its consumer group, and the outbox was all relayed.
        groups = {entry.consumer_group for entry in harness.inbox()}
        assert groups == {"orders", "saga-orchestrator", "warehouse"}
        assert len(harness.inbox("orders")) == 10
        assert all(entry.outcome == "processed" for entry in harness.inbox())
        assert harness.outbox(unpublished_only=True) == []
        assert {record.topic for record in harness.outbox()} >= {
            OUTPUT,
            "saga.warehouse.commands",
            "saga.replies",
            "saga.events",
        }


def test_a_30_minute_saga_timeout_fires_when_virtual_time_passes_it():
    harness, orchestrator, _ = saga_harness(warehouse_answers=False)
    with harness:
        harness.send(TOPIC, step_event("o-1", 0))
        harness.run_until_idle()
        assert harness.sagas()["o-1"].status == "running"

        harness.advance(29 * 60 + 59)
        assert harness.sagas()["o-1"].status == "running"
        harness.advance(1)

        state = harness.sagas()["o-1"]
        assert state.status == "compensated"
        assert "no reply within 1800 s" in (state.reason or "")
        assert orchestrator.clock is harness.clock
    assert orchestrator.clock is not harness.clock  # its own clock back after close


def test_advance_refuses_a_saga_started_on_a_clock_other_than_the_harness_s():
    orchestrator = SagaOrchestrator(registry)
    starter = SagaOrchestrator(registry)  # the service's own: not in clocked=
    orders = Processor("orders")

    @orders.handler(TOPIC)
    def place(event: Event, unit: UnitOfWork) -> None:
        order_id = event.data["key"]
        starter.start(unit.session, "Reserve", order_id, {"order_id": order_id})

    processors = [orders, orchestrator_processor(orchestrator)]
    harness = PipelineHarness(processors, clocked=[orchestrator])
    with harness:
        harness.send(TOPIC, step_event("o-1", 0))
        harness.run_until_idle()

        with pytest.raises(RuntimeError, match=r"saga o-1 started at .* list it in"):
            harness.advance(30 * 60)


def test_advance_in_steps_runs_until_idle_after_each():
    harness, _, _ = saga_harness(warehouse_answers=False)
    with harness:
        harness.send(TOPIC, step_event("o-1", 0))
        harness.run_until_idle()
        start = harness.clock.now
        harness.advance(3600, step=600)
        assert harness.clock.now - start == timedelta(hours=1)
        assert harness.sagas()["o-1"].status == "compensated"


def test_dead_letters_of_a_topic_are_gathered_from_every_reader():
    rejecting = Processor("rejecting")

    @rejecting.handler(TOPIC)
    def reject(event: Event, unit: UnitOfWork) -> None:
        raise Reject("never")

    with PipelineHarness([rejecting], partitions=3) as harness:
        for n in range(6):
            harness.send(TOPIC, step_event(f"k{n}", 0))
        harness.run_until_idle()
        letters = harness.dead_letters(TOPIC)
        assert sorted(letter.key for letter in letters) == [f"k{n}".encode() for n in range(6)]
        assert {letter.reason for letter in letters} == {"rejected"}
        assert {entry.outcome for entry in harness.inbox("rejecting")} == {"dead_lettered"}


# --- recordings as input -----------------------------------------------------------------------


def recorded(event: Event, *, partition: int, offset: int, topic: str = TOPIC) -> RecordedMessage:
    message = encode(event)
    headers = (*((name, value) for name, value in message.headers), ("trace", None))
    return RecordedMessage(
        topic=topic,
        partition=partition,
        offset=offset,
        key=message.key,
        value=message.value,
        headers=headers,
        timestamp_ms=1_767_225_600_000 + offset,
    )


def test_a_recording_goes_in_with_keys_headers_and_timestamps(drivers):
    seen: list[tuple[str, int, int]] = []
    processor = recording_processor(seen)
    driver = ProcessorTestDriver(processor, partitions=4)
    drivers.append(driver)
    events = [step_event(f"k{n % 5}", n // 5) for n in range(20)]
    lines = [format_line(recorded(e, partition=5, offset=n)) for n, e in enumerate(events)]

    records = driver.send_recording(parse_line(line) for line in lines)
    driver.run()

    assert [r.partition for r in records] == [partition_for(r.key or b"", 4) for r in records]
    assert [r.timestamp_ms for r in records] == [1_767_225_600_000 + n for n in range(20)]
    assert records[0].headers[-1] == ("trace", b"")  # a null header value as the runtime gives it
    assert len(seen) == 20
    first = [parse_line(lines[0])]  # recorded in partition 5
    with pytest.raises(
        ValueError, match=r"other has 4 partitions here and the recording has partition 5"
    ):
        driver.send_recording(first, preserve_partitions=True, topic="other")
    wide = ProcessorTestDriver(processor, partitions={"other": 6})
    drivers.append(wide)
    kept = wide.send_recording(first, preserve_partitions=True, topic="other")
    assert (kept[0].topic, kept[0].partition) == ("other", 5)


def test_a_harness_feeds_a_recording_to_every_reader_of_its_topic():
    harness, _, _ = saga_harness(warehouse_answers=True)
    with harness:
        messages = [recorded(step_event(f"o-{n}", 0), partition=0, offset=n) for n in range(3)]
        assert harness.send_recording(messages) == 3
        harness.run_until_idle()
        assert {s.status for s in harness.sagas().values()} == {"completed"}


def test_a_clocked_component_given_to_a_harness_reads_its_clock():
    orchestrator = SagaOrchestrator(registry)
    own = orchestrator.clock
    with PipelineHarness([], clocked=[orchestrator]) as harness:
        harness.clock.advance(42)
        assert orchestrator.clock() == harness.clock.now
        with Session(harness.database) as session, session.begin():
            state = orchestrator.start(session, "Reserve", "o-1", {"order_id": "o-1"})
        assert state.started_at == harness.clock.now
    assert orchestrator.clock is own


def test_one_advance_fires_each_deadline_at_its_own_moment_and_what_it_starts_in_turn():
    # A step of two attempts, 30 minutes each: one jump of 65 minutes sends the retry after the
    # first timeout and compensates at the second (it used to fire the first timeout only,
    # stamped at the end of the jump, and leave the saga running).
    orchestrator = SagaOrchestrator(reserve_registry(retries=1))
    orders = Processor("orders")

    @orders.handler(TOPIC)
    def place(event: Event, unit: UnitOfWork) -> None:
        order_id = event.data["key"]
        orchestrator.start(unit.session, "Reserve", order_id, {"order_id": order_id})

    harness = PipelineHarness(
        [orders, orchestrator_processor(orchestrator)], clocked=[orchestrator]
    )
    with harness:
        harness.send(TOPIC, step_event("o-1", 0))
        harness.run_until_idle()
        started = harness.clock.now

        harness.advance(65 * 60)

        state = harness.sagas()["o-1"]
        assert state.status == "compensated"
        timed_out = [entry.at - started for entry in state.history if "timed_out" in entry.what]
        # the second attempt went out after the step's 1 s retry backoff
        assert timed_out == [timedelta(minutes=30), timedelta(minutes=60, seconds=1)]
        assert harness.clock.now - started == timedelta(minutes=65)
