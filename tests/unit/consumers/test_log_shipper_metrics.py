"""The log shipper's Prometheus metrics are its counters, read at each scrape."""

from __future__ import annotations

from prometheus_client import generate_latest

from consumers.log_shipper import ShipperCounters
from consumers.log_shipper_metrics import shipper_registry


def test_a_scrape_reads_the_counters_as_they_are_then():
    counters = ShipperCounters(consumed=12, shipped=10, retried=3, dead_lettered=2, outages=1)
    registry = shipper_registry(lambda: counters)

    first = generate_latest(registry).decode()
    counters.shipped += 5
    counters.lag = 42
    second = generate_latest(registry).decode()

    assert "pipeline_log_shipper_shipped_total 10.0" in first
    assert "pipeline_log_shipper_dead_lettered_total 2.0" in first
    # There from the first scrape (it was absent until the first metrics line, 30 s): NaN
    # until the shipper knows it.
    assert "pipeline_log_shipper_lag NaN" in first
    assert "pipeline_log_shipper_shipped_total 15.0" in second
    assert "pipeline_log_shipper_lag 42.0" in second
