"""Processor metrics: counters, snapshots, the summary line, and the Prometheus registry."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
from prometheus_client import generate_latest

from pipeline.processing.metrics import MetricsSnapshot, ProcessorMetrics, summary_line


def busy_metrics() -> ProcessorMetrics:
    metrics = ProcessorMetrics("orders")
    for _ in range(3):
        metrics.processed("requests.orders")
    metrics.duplicate("requests.orders")
    metrics.dead_lettered("requests.orders", "rejected")
    metrics.dead_lettered("requests.orders", "rejected")
    metrics.dead_lettered("requests.orders", "undecodable")
    metrics.retried("requests.orders")
    metrics.retried("requests.orders")
    metrics.set_in_flight(4)
    metrics.set_lag("requests.orders", 0, 7)
    metrics.set_lag("requests.orders", 1, 5)
    return metrics


def test_snapshot_holds_the_counts() -> None:
    snapshot = busy_metrics().snapshot()

    assert (snapshot.processed, snapshot.duplicates, snapshot.retries) == (3, 1, 2)
    assert snapshot.dead_lettered == {"rejected": 2, "undecodable": 1}
    assert snapshot.dead_lettered_total == 3
    assert snapshot.in_flight == 4
    assert snapshot.lag == {("requests.orders", 0): 7, ("requests.orders", 1): 5}
    assert snapshot.lag_total == 12


def test_a_fresh_processor_counts_nothing() -> None:
    snapshot = ProcessorMetrics("orders").snapshot()

    assert (snapshot.processed, snapshot.duplicates, snapshot.retries) == (0, 0, 0)
    assert snapshot.dead_lettered == {} and snapshot.lag == {}
    assert (snapshot.dead_lettered_total, snapshot.lag_total, snapshot.in_flight) == (0, 0, 0)


def test_a_snapshot_does_not_change_with_later_counts() -> None:
    metrics = busy_metrics()
    before = metrics.snapshot()

    metrics.processed("requests.orders")
    metrics.dead_lettered("requests.orders", "rejected")
    metrics.set_lag("requests.orders", 0, 100)

    assert before.processed == 3
    assert before.dead_lettered == {"rejected": 2, "undecodable": 1}
    assert before.lag[("requests.orders", 0)] == 7


def test_forget_lag_drops_the_partition_from_the_snapshot_and_the_registry() -> None:
    metrics = busy_metrics()

    metrics.forget_lag("requests.orders", 0)
    metrics.forget_lag("requests.orders", 9)  # never set: nothing to forget

    assert metrics.snapshot().lag == {("requests.orders", 1): 5}
    exposed = generate_latest(metrics.registry).decode()
    assert 'partition="0"' not in exposed
    assert 'partition="1"' in exposed


def test_summary_line_without_an_earlier_snapshot_has_no_rate() -> None:
    line = summary_line("orders", busy_metrics().snapshot(), None)

    assert line == (
        "orders: 3 processed, 1 duplicates skipped, 3 dead-lettered, 2 retries, 4 in flight, lag 12"
    )


def test_a_lag_whose_end_offsets_are_old_says_how_old_and_a_fresh_one_does_not() -> None:
    # While Kafka answers no fetch (it refuses the login, say) the end offsets stay as they
    # were, and the line read "lag 0" with events waiting.
    metrics = busy_metrics()
    metrics.set_lag_answered_at(time.time() - 95.4)
    old = summary_line("orders", metrics.snapshot(), None)
    metrics.set_lag_answered_at(time.time() - 2.0)
    fresh = summary_line("orders", metrics.snapshot(), None)
    fresh_age = _exposed_lag_age(metrics)
    metrics.set_lag_answered_at(None)  # no partition assigned: no age to tell
    unknown = summary_line("orders", metrics.snapshot(), None)

    assert old.endswith("lag 12 as of 95 s ago (no fetch answered since)")
    assert fresh.endswith("lag 12") and unknown.endswith("lag 12")
    assert 2.0 <= fresh_age < 3.0
    assert math.isnan(_exposed_lag_age(metrics))


def _exposed_lag_age(metrics: ProcessorMetrics) -> float:
    exposed = generate_latest(metrics.registry).decode()
    [age] = [
        float(line.rsplit(" ", 1)[1])
        for line in exposed.splitlines()
        if line.startswith('pipeline_consumer_lag_age_seconds{processor="orders"}')
    ]
    return age


def test_the_lag_age_grows_when_scraped_while_nothing_sets_it(monkeypatch) -> None:
    # Set from the event loop, it froze at "0.03 s" while an async handler blocked the loop
    # with time.sleep, and an alert on it could never fire.
    metrics = busy_metrics()
    clock = [1_000.0]
    monkeypatch.setattr("pipeline.processing.metrics.time.time", lambda: clock[0])
    metrics.set_lag_answered_at(999.97)

    clock[0] += 60  # a minute of a blocked loop: no one sets anything meanwhile

    exposed = generate_latest(metrics.registry).decode()
    assert 'pipeline_consumer_lag_age_seconds{processor="orders"} 60.0299' in exposed
    assert metrics.snapshot().lag_age_s == pytest.approx(60.03)


def test_summary_line_gives_the_rate_since_the_earlier_snapshot() -> None:
    before = MetricsSnapshot(
        at=100.0, processed=1_000, duplicates=0, dead_lettered={}, retries=0, in_flight=0
    )
    now = replace(before, at=104.0, processed=2_642)

    line = summary_line("orders", now, before)

    assert line.startswith("orders: 2,642 processed (410.5/s), ")


def test_summary_line_has_no_rate_when_no_time_passed() -> None:
    before = MetricsSnapshot(
        at=100.0, processed=1, duplicates=0, dead_lettered={}, retries=0, in_flight=0
    )

    assert "/s" not in summary_line("orders", replace(before, processed=5), before)


def test_registry_exposes_every_metric_with_its_labels() -> None:
    exposed = generate_latest(busy_metrics().registry).decode()

    assert 'pipeline_events_processed_total{processor="orders",topic="requests.orders"} 3.0' in (
        exposed
    )
    assert 'pipeline_events_duplicate_total{processor="orders",topic="requests.orders"} 1.0' in (
        exposed
    )
    assert (
        'pipeline_events_dead_lettered_total{processor="orders",reason="rejected",'
        'topic="requests.orders"} 2.0' in exposed
    )
    assert 'pipeline_event_retries_total{processor="orders",topic="requests.orders"} 2.0' in (
        exposed
    )
    assert 'pipeline_events_in_flight{processor="orders"} 4.0' in exposed
    assert (
        'pipeline_consumer_lag{partition="0",processor="orders",topic="requests.orders"} 7.0'
        in exposed
    )


def test_two_processors_in_one_process_have_registries_of_their_own() -> None:
    orders = ProcessorMetrics("orders")
    billing = ProcessorMetrics("billing")

    orders.processed("requests.orders")

    assert 'processor="orders"' in generate_latest(orders.registry).decode()
    assert 'processor="orders"' not in generate_latest(billing.registry).decode()


def test_the_lag_age_is_nan_before_any_fetch_answered() -> None:
    # The series was absent until the first answer; the docs say NaN with no partition.
    assert math.isnan(_exposed_lag_age(ProcessorMetrics("orders")))
