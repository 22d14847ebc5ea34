"""The orders service's table in the demo shows the service's final figures: read once it is
idle after the sagas, all from one read. (It showed a read taken as the requests were done,
before the sagas' commands: 1,828 processed where the service said 2,613 at its stop.)"""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest

from pipeline.cli import demo_services
from pipeline.cli.demo_services import ProcessingReport, final_figures, parse_metrics
from pipeline.processing.metrics import ProcessorMetrics


def _read(processed: int, *, in_flight: int = 0, lag: int = 0, dead: int = 7) -> ProcessingReport:
    return ProcessingReport(
        processed=processed,
        duplicates=50,
        dead_lettered={"schema_invalid": dead},
        retries=3,
        in_flight=in_flight,
        lag=lag,
    )


def test_an_early_read_followed_by_later_ones_yields_the_final_one() -> None:
    reads = [
        _read(1_828, in_flight=12, lag=430, dead=5),  # the first periodic summary's moment
        _read(2_400, in_flight=3, lag=0),
        _read(2_613),
        _read(2_613),
    ]

    picked = [final_figures(reads[:n]) for n in range(1, len(reads) + 1)]

    assert picked[:3] == [None, None, None]
    final = picked[3]
    assert final is reads[3]
    assert (final.processed, final.duplicates, final.dead_lettered) == (
        2_613,
        50,
        {"schema_invalid": 7},
    )


def test_idle_while_the_counts_still_move_is_not_final() -> None:
    assert final_figures([_read(2_600), _read(2_613)]) is None
    assert final_figures([_read(2_613, dead=6), _read(2_613, dead=7)]) is None
    assert final_figures([_read(2_613, lag=1), _read(2_613, lag=1)]) is None
    assert final_figures([_read(2_613, in_flight=1), _read(2_613, in_flight=1)]) is None


def test_the_read_has_the_services_events_in_flight_and_lag() -> None:
    metrics = ProcessorMetrics("orders-service")
    for _ in range(3):
        metrics.processed("requests.orders")
    metrics.processed("saga.orders.commands")
    metrics.duplicate("requests.orders")
    metrics.dead_lettered("requests.orders", "schema_invalid")
    metrics.dead_lettered("requests.orders", "retries_exhausted")
    metrics.set_in_flight(2)
    metrics.set_lag("requests.orders", 0, 5)
    metrics.set_lag("saga.orders.commands", 1, 4)

    read = parse_metrics(generate_latest(metrics.registry).decode())

    assert (read.processed, read.duplicates, read.in_flight, read.lag) == (4, 1, 2, 9)
    assert read.dead_lettered == {"schema_invalid": 1, "retries_exhausted": 1}


class _Running:
    returncode = None

    def poll(self) -> None:
        return None


def test_the_demo_waits_for_the_service_to_be_idle_and_takes_that_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads = iter([_read(1_828, in_flight=12, lag=430), _read(2_613), _read(2_613), _read(9_999)])
    monkeypatch.setattr(demo_services, "scrape", lambda _port: next(reads))
    monkeypatch.setattr(time, "sleep", lambda _s: None)
    said: list[str] = []

    report = demo_services._idle_figures(1, _Running(), "orders.log", said.append)  # type: ignore[arg-type]

    assert report.processed == 2_613
    assert said == []
