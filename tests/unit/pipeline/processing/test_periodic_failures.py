"""A periodic task failing round after round: one line at once, then at most one a minute,
and one when it works again (the orchestrator's deadlines, every 0.2 s, made 164 lines in a
34 s database outage)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy.engine import Engine

from pipeline.kafka.producer import EventProducer
from pipeline.processing import Processor
from pipeline.processing.faust.binding import FaustBinding
from pipeline.processing.faust.internals import FaustInternals
from pipeline.processing.periodic_failures import PeriodicFailures
from pipeline.settings import PipelineSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (record.levelname, record.getMessage())
        for record in caplog.records
        if record.name == "pipeline.processing"
    ]


def test_a_task_failing_every_round_is_said_at_once_then_once_a_minute_then_when_it_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "pipeline.processing")
    clock = Clock()
    failures = PeriodicFailures("orchestrator", every_s=60, clock=clock)

    for _ in range(170):  # 34 s of rounds every 0.2 s
        failures.failed("fire_deadlines", ConnectionError("connection refused"))
        clock.now += 0.2
    clock.now += 30  # 64 s after the first
    failures.failed("fire_deadlines", ConnectionError("connection refused"))
    failures.worked("fire_deadlines")
    failures.worked("fire_deadlines")  # a round that works after one that worked: nothing

    assert lines(caplog) == [
        (
            "WARNING",
            "orchestrator: periodic task fire_deadlines failed (connection refused); it runs "
            "again at its next round (said again at most every 60 s while it fails)",
        ),
        (
            "WARNING",
            "orchestrator: periodic task fire_deadlines still fails after 64 s (171 failed "
            "rounds so far): connection refused",
        ),
        (
            "INFO",
            "orchestrator: periodic task fire_deadlines works again, after 64 s failing "
            "(171 failed rounds)",
        ),
    ]


def test_each_task_is_counted_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "pipeline.processing")
    failures = PeriodicFailures("orchestrator", clock=Clock())

    failures.failed("fire_deadlines", ValueError("a"))
    failures.failed("count_sagas", ValueError("b"))
    failures.worked("count_sagas")

    assert [message.split(" (")[0] for _, message in lines(caplog)] == [
        "orchestrator: periodic task fire_deadlines failed",
        "orchestrator: periodic task count_sagas failed",
        "orchestrator: periodic task count_sagas works again, after 0 s failing",
    ]


def test_the_processors_periodic_tasks_log_through_it(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "pipeline.processing")
    processor = Processor("periodic-test")
    broken = {"now": True}

    @processor.every(0.2)
    def fire(database: Engine) -> None:
        if broken["now"]:
            raise ConnectionError("the database is away")

    binding = FaustBinding(
        processor,
        PipelineSettings(),
        database=database,
        producer=EventProducer(object()),  # type: ignore[arg-type]  # never produces here
        internals=FaustInternals("0.15.3"),
    )
    run = binding.periodic(processor.periodic_tasks[0])

    async def rounds() -> None:
        for _ in range(5):
            await run()
        broken["now"] = False
        await run()

    asyncio.run(rounds())

    said = [message for _, message in lines(caplog)]
    assert len(said) == 2, said
    assert said[0].startswith("periodic-test: periodic task ")
    assert "failed (the database is away)" in said[0]
    assert said[1].endswith("works again, after 0 s failing (5 failed rounds)")


def test_a_task_defined_inside_a_function_is_named_without_locals() -> None:
    def build() -> Processor:
        processor = Processor("orchestrator")

        @processor.every(0.2)
        def fire_deadlines(database: Engine) -> None:
            pass

        return processor

    (task,) = build().periodic_tasks

    assert task.name == (
        "test_a_task_defined_inside_a_function_is_named_without_locals.build.fire_deadlines"
    )
