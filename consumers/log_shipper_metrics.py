"""The log shipper's Prometheus metrics, read from its counters at each scrape.

A collector rather than counters of its own: :class:`ShipperCounters` (here, beside the
figures it is read for) is what the shipper counts in one place (its summary line reads it
too), so a scrape and the line always agree, and the shipping code counts each thing once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["MetricsLine", "ShipperCollector", "ShipperCounters", "shipper_registry"]

#: name, help, the counter's field.
_COUNTERS = (
    ("pipeline_log_shipper_consumed", "Records read from the logs topic", "consumed"),
    ("pipeline_log_shipper_shipped", "Log documents Elasticsearch acknowledged", "shipped"),
    (
        "pipeline_log_shipper_retried",
        "Documents sent again after a 429, a 5xx or a block",
        "retried",
    ),
    (
        "pipeline_log_shipper_dead_lettered",
        "Records written to the dead-letter topic instead",
        "dead_lettered",
    ),
    ("pipeline_log_shipper_commits", "Offset commits", "commits"),
    ("pipeline_log_shipper_commit_failures", "Offset commits that failed", "commit_failures"),
    (
        "pipeline_log_shipper_outages",
        "Times Elasticsearch could not be reached or took no writes",
        "outages",
    ),
)


@dataclass
class ShipperCounters:
    """Running totals of one shipper."""

    consumed: int = 0
    shipped: int = 0
    retried: int = 0
    dead_lettered: int = 0
    commits: int = 0
    commit_failures: int = 0
    outages: int = 0
    lag: int | None = None
    extra: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        lag = "?" if self.lag is None else f"{self.lag:,}"
        return (
            f"shipped={self.shipped:,} retried={self.retried:,} "
            f"dead_lettered={self.dead_lettered:,} lag={lag} outages={self.outages} "
            f"commit_failures={self.commit_failures}"
        )


class MetricsLine:
    """The counters as a line every ``interval_s`` of a run, through ``report``: with the
    documents shipped per second since the line before (the first: since the run started) and,
    while Elasticsearch is away (:attr:`away_since` set), for how long; while a request waits
    for its answer (:attr:`asked_since` set), for how long."""

    def __init__(
        self, counters: ShipperCounters, interval_s: float, report: Callable[[str], None]
    ) -> None:
        self._counters = counters
        self._interval_s = interval_s
        self._report = report
        self._last: tuple[float, int] | None = None  # when the last line was, shipped then
        self._due: float | None = None  # when the next line is (None: not running)
        #: Since when Elasticsearch cannot be reached (``None``: it can), by the monotonic clock,
        #: and how it is away (``unreachable``, ``not taking writes``).
        self.away_since: float | None = None
        self.away_as = "unreachable"
        #: Since when the request in flight waits for its answer (``None``: none waits long).
        self.asked_since: float | None = None

    def start(self) -> None:
        """A run starts: the first line comes ``interval_s`` from now."""
        now = time.monotonic()
        self._last = (now, self._counters.shipped)
        self._due = now + self._interval_s

    def when_due(self) -> bool:
        """Whether a line is due (the next one is then due ``interval_s`` later)."""
        now = time.monotonic()
        if self._due is None or now < self._due:
            return False
        self._due = now + self._interval_s
        return True

    def say(self) -> None:
        """Report the line now."""
        now, shipped = time.monotonic(), self._counters.shipped
        rate = ""
        if self._last is not None and now > self._last[0]:
            rate = f" rate={(shipped - self._last[1]) / (now - self._last[0]):,.1f}/s"
        self._last = (now, shipped)
        away = ""
        if self.away_since is not None:
            away = (
                f"; elasticsearch {self.away_as} for {now - self.away_since:.0f} s, "
                "consumption paused"
            )
        elif self.asked_since is not None:
            away = f"; no answer from elasticsearch for {now - self.asked_since:.0f} s"
        self._report(self._counters.line() + rate + away)


class ShipperCollector(Collector):
    """The counters of the shipper ``counters()`` gives, as Prometheus counters, and its lag."""

    def __init__(self, counters: Callable[[], ShipperCounters]) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        counters = self._counters()
        for name, help_text, field_name in _COUNTERS:
            yield CounterMetricFamily(name, help_text, value=getattr(counters, field_name))
        # Always there, NaN until known (before the first assignment): a gauge that appears
        # only later cannot be told from a scrape that lost it, and alerts on it stay blank.
        yield GaugeMetricFamily(
            "pipeline_log_shipper_lag",
            "Records of the assigned partitions not read yet, measured every second (NaN "
            "while not known: no partition assigned yet, or Kafka not answering)",
            value=math.nan if counters.lag is None else counters.lag,
        )


def shipper_registry(counters: Callable[[], ShipperCounters]) -> CollectorRegistry:
    """A registry holding the shipper's metrics (its own: several shippers in one process, in
    tests, do not mix)."""
    registry = CollectorRegistry()
    registry.register(ShipperCollector(counters))
    return registry
