"""``pipeline_events_stalled_seconds``: events in flight with none finishing, on a test clock.

A processor whose transactions waited on a lock (``lock table pipeline_inbox`` for 50 s) showed
16 events in flight, its lag's age low and its database up, and logged nothing: no alert the
docs recommend fired. The stall is worked out when scraped, as the lag's age is."""

from __future__ import annotations

from sqlalchemy import MetaData

from pipeline.envelope import Event
from pipeline.processing import Processor, UnitOfWork
from pipeline.processing.metrics import ProcessorMetrics, summary_line
from tests.support.driving import DriverFactory
from tests.support.driving import step_event as event

TOPIC = "requests.orders"
STALLED = "pipeline_events_stalled_seconds"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _scraped(metrics: ProcessorMetrics) -> float | None:
    return metrics.registry.get_sample_value(STALLED, {"processor": "orders"})


def test_events_in_flight_with_none_finished_show_the_stall_when_scraped() -> None:
    clock = Clock()
    metrics = ProcessorMetrics("orders", clock=clock)
    metrics.set_in_flight(16)

    clock.now += 50.0  # transactions waiting on a lock: nobody calls the metrics meanwhile

    assert _scraped(metrics) == 50.0
    assert metrics.snapshot().stalled_s == 50.0


def test_each_way_of_finishing_an_event_ends_the_stall() -> None:
    clock = Clock()
    metrics = ProcessorMetrics("orders", clock=clock)
    metrics.set_in_flight(3)
    seen = []
    for finish in (
        lambda: metrics.processed(TOPIC),
        lambda: metrics.duplicate(TOPIC),
        lambda: metrics.dead_lettered(TOPIC, "rejected"),
    ):
        clock.now += 40.0
        finish()
        seen.append(_scraped(metrics))
    clock.now += 7.0  # still in flight, none finished since the dead letter

    assert seen == [0.0, 0.0, 0.0]
    assert _scraped(metrics) == 7.0


def test_no_events_in_flight_is_no_stall_and_the_next_ones_are_timed_from_their_start() -> None:
    clock = Clock()
    metrics = ProcessorMetrics("orders", clock=clock)
    clock.now += 600.0  # idle: nothing to handle
    idle = _scraped(metrics)
    metrics.set_in_flight(2)  # events arrive after ten idle minutes
    clock.now += 5.0
    metrics.set_in_flight(4)  # more come in flight: not a new start
    clock.now += 5.0
    busy = _scraped(metrics)
    metrics.set_in_flight(0)  # handed back (a revocation, say) without finishing

    assert idle == 0.0
    assert busy == 10.0
    assert _scraped(metrics) == 0.0


def test_the_summary_line_says_none_finished_once_stalled_for_30_s() -> None:
    clock = Clock()
    metrics = ProcessorMetrics("orders", clock=clock)
    metrics.set_in_flight(16)
    clock.now += 29.0
    short = summary_line("orders", metrics.snapshot(), None)
    clock.now += 23.4

    line = summary_line("orders", metrics.snapshot(), None)

    assert short.endswith("16 in flight, lag 0")
    assert line.endswith("16 in flight, lag 0; none finished for 52 s")


def test_the_engine_feeds_the_stall_without_calls_of_its_own() -> None:
    # Through the real engine (the broker-free driver): a handler that waits (on a lock, say)
    # sees the stall grow; the next event of its key starts from the finish, not from then.
    clock = Clock()
    seen: list[float] = []

    def handler(event: Event, unit: UnitOfWork) -> None:
        seen.append(metrics.stalled_s())
        if event.data["seq"] == 0:
            clock.now += 50.0  # waits on a lock for 50 s
            seen.append(metrics.stalled_s())

    processor = Processor("orders")
    processor.handler(TOPIC)(handler)
    factory = DriverFactory(MetaData())
    try:
        driver = factory(processor)
        metrics = driver._metrics = ProcessorMetrics("orders", clock=clock)
        driver.send(TOPIC, event("k", 0))
        driver.send(TOPIC, event("k", 1))

        assert driver.run().processed == 2
    finally:
        factory.close()

    assert seen == [0.0, 50.0, 0.0]
    assert metrics.stalled_s() == 0.0  # none in flight once done
