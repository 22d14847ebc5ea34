"""The harness's clock: ``advance_to`` fires each saga deadline at its own moment, as ``advance``
does, and a clock moved by hand past a deadline is refused rather than fire it late."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from pydantic import BaseModel

from pipeline.envelope import Event
from pipeline.processing import Processor, UnitOfWork
from pipeline.processing.harness import PipelineHarness
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor
from tests.support.driving import step_event

TOPIC = "harness.clock.input"


class Data(BaseModel):
    order_id: str


@pytest.fixture
def harness() -> Iterator[PipelineHarness]:
    """A saga of one step, 30 s per attempt, tried twice, that nobody answers; "o-1" started
    at the clock's start."""
    hold = Step(
        "hold",
        participant="warehouse",
        action=lambda d: Call("Hold", {"order_id": d.order_id}),
        timeout_s=30,
        retries=1,
    )
    registry = SagaRegistry([SagaDefinition("Reserve", version=1, data_model=Data, steps=[hold])])
    orchestrator = SagaOrchestrator(registry)
    orders = Processor("orders")

    @orders.handler(TOPIC)
    def place(event: Event, unit: UnitOfWork) -> None:
        order_id = event.data["key"]
        orchestrator.start(unit.session, "Reserve", order_id, {"order_id": order_id})

    with PipelineHarness(
        [orders, orchestrator_processor(orchestrator)], clocked=[orchestrator]
    ) as made:
        made.send(TOPIC, step_event("o-1", 0))
        made.run_until_idle()
        yield made


def history(harness: PipelineHarness, start: datetime) -> list[tuple[str, float]]:
    state = harness.sagas()["o-1"]
    return [(entry.what, (entry.at - start).total_seconds()) for entry in state.history]


TIMED_OUT_TWICE = [
    ("saga_started", 0.0),
    ("action_sent", 0.0),
    ("action_timed_out", 30.0),
    ("action_sent", 31.0),  # the retry, after the step's 1 s backoff
    ("action_timed_out", 61.0),
    ("saga_compensating", 61.0),
    ("saga_compensated", 61.0),
]


def test_advance_to_fires_each_deadline_at_its_own_moment_as_advance_does(harness):
    start = harness.clock.now

    harness.advance_to(start + timedelta(seconds=120))

    assert harness.clock.now == start + timedelta(seconds=120)
    assert harness.sagas()["o-1"].status == "compensated"
    assert history(harness, start) == TIMED_OUT_TWICE


def test_advance_to_takes_an_aware_moment(harness):
    with pytest.raises(TypeError, match=r"advance_to takes an aware datetime.*got 30"):
        harness.advance_to(30)
    with pytest.raises(TypeError, match=r"advance_to takes an aware datetime"):
        harness.advance_to(datetime(2026, 1, 1, 0, 2))


def test_a_clock_moved_by_hand_past_a_deadline_is_refused_not_fired_late(harness):
    start = harness.clock.now
    harness.clock.advance_to(start + timedelta(seconds=120))

    message = r"moved to .* past a saga deadline due at .*00:00:30.* harness\.advance_to\(moment\)"
    with pytest.raises(RuntimeError, match=message):
        harness.run_until_idle()
    with pytest.raises(RuntimeError, match=message):
        harness.advance(1)
    # Nothing ran: no timeout stamped at the clock's time.
    assert history(harness, start) == [("saga_started", 0.0), ("action_sent", 0.0)]


def test_a_clock_moved_by_hand_short_of_any_deadline_is_fine(harness):
    start = harness.clock.now
    harness.clock.advance(29)
    harness.run_until_idle()

    harness.advance(91)

    assert history(harness, start) == TIMED_OUT_TWICE


def test_periodic_tasks_run_after_a_move_by_hand_fire_its_deadlines_late_on_purpose(harness):
    start = harness.clock.now
    harness.clock.advance(120)

    harness.run_periodic_tasks()  # the orchestrator was behind: its timeout fires now
    harness.run_until_idle()

    assert ("action_timed_out", 120.0) in history(harness, start)
