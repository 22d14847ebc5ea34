"""Counters of a processor: Prometheus metrics, and a summary line for the log.

Each processor has its own :class:`~prometheus_client.CollectorRegistry` (served by
``start_http_server`` when ``processing.metrics_port`` is set), so several processors, or
tests, in one process do not collide.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["LAG_STALE_S", "STALLED_AFTER_S", "MetricsSnapshot", "ProcessorMetrics", "consumer_lag"]


@dataclass(frozen=True)
class MetricsSnapshot:
    at: float
    processed: int
    duplicates: int
    dead_lettered: dict[str, int]
    retries: int
    in_flight: int
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Seconds since Kafka last told the consumer where its partitions end (what the lag is
    #: counted from); ``None`` when not known.
    lag_age_s: float | None = None
    #: Seconds since an attempt first found the database unavailable, while no attempt has got
    #: through since; ``None`` while it answers.
    database_down_s: float | None = None
    #: Seconds the processor has had events in flight without finishing any (0: it finishes
    #: events, or has none in flight).
    stalled_s: float = 0.0

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    @property
    def lag_total(self) -> int:
        return sum(self.lag.values())


class ProcessorMetrics:
    """Counts what the engine does; read with :meth:`snapshot`.

    ``clock`` (monotonic seconds) times how long events are in flight with none finishing
    (``pipeline_events_stalled_seconds``).
    """

    def __init__(
        self,
        processor: str,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.processor = processor
        self._clock = clock
        labels = ["processor", "topic"]
        self._processed = Counter(
            "pipeline_events_processed",
            "Events handled and committed",
            labels,
            registry=self.registry,
        )
        self._duplicates = Counter(
            "pipeline_events_duplicate",
            "Redelivered events skipped by the inbox",
            labels,
            registry=self.registry,
        )
        self._dead_lettered = Counter(
            "pipeline_events_dead_lettered",
            "Events sent to the dead-letter topic",
            [*labels, "reason"],
            registry=self.registry,
        )
        self._retries = Counter(
            "pipeline_event_retries",
            "Attempts repeated after a failure",
            labels,
            registry=self.registry,
        )
        self._in_flight = Gauge(
            "pipeline_events_in_flight",
            "Events being handled now",
            ["processor"],
            registry=self.registry,
        )
        self._lag = Gauge(
            "pipeline_consumer_lag",
            "Messages behind the end of the partition",
            [*labels, "partition"],
            registry=self.registry,
        )
        self._lag_age = Gauge(
            "pipeline_consumer_lag_age_seconds",
            "Seconds since a fetch answer last gave the partitions' end offsets (a lag that is "
            "not refreshed while Kafka does not answer)",
            ["processor"],
            registry=self.registry,
        )
        self._database_up = Gauge(
            "pipeline_database_up",
            "0 from the first attempt that found the database unavailable until one gets "
            "through, else 1",
            ["processor"],
            registry=self.registry,
        )
        self._stalled = Gauge(
            "pipeline_events_stalled_seconds",
            "Seconds the processor has had events in flight without finishing any (processed, "
            "skipped as duplicates or dead-lettered); 0 while it finishes events or has none in "
            "flight",
            ["processor"],
            registry=self.registry,
        )
        # The labelled children of the per-event counters, looked up once per topic (a
        # ``labels()`` call per event was a measurable part of the cost of an event).
        self._processed_of: dict[str, Counter] = {}
        # Read when scraped rather than set per change: the count changes a few times per event
        # (a gauge's set() takes its lock each time), and only a scrape reads it.
        self._in_flight.labels(self.processor).set_function(lambda: self._in_flight_now)
        self._counts = {"processed": 0, "duplicates": 0, "retries": 0}
        self._dead: dict[str, int] = {}
        self._lags: dict[tuple[str, int], int] = {}
        self._in_flight_now = 0
        #: When an event last finished, or events came in flight while none were (monotonic).
        self._progress_at = clock()
        #: When a fetch answer last gave the end offsets (epoch seconds; None: not known).
        self._answered_at: float | None = None
        #: When the database was first found unavailable (monotonic; None: it answers).
        self._database_down_since: float | None = None
        # NaN until a fetch answer gave end offsets (the series was absent until then, as the
        # docs' "no partition assigned: NaN" did not say).
        self._lag_age.labels(self.processor).set_function(self._lag_age_of_now)
        self._database_up.labels(self.processor).set_function(
            lambda: 0.0 if self._database_down_since is not None else 1.0
        )
        # Worked out when scraped, like the lag's age: it grows while the event loop is blocked.
        self._stalled.labels(self.processor).set_function(self.stalled_s)

    def processed(self, topic: str) -> None:
        self._counts["processed"] += 1
        self._progress_at = self._clock()
        child = self._processed_of.get(topic)
        if child is None:
            child = self._processed_of[topic] = self._processed.labels(self.processor, topic)
        child.inc()

    def duplicate(self, topic: str) -> None:
        self._counts["duplicates"] += 1
        self._progress_at = self._clock()
        self._duplicates.labels(self.processor, topic).inc()

    def dead_lettered(self, topic: str, reason: str) -> None:
        self._dead[reason] = self._dead.get(reason, 0) + 1
        self._progress_at = self._clock()
        self._dead_lettered.labels(self.processor, topic, reason).inc()

    def retried(self, topic: str) -> None:
        self._counts["retries"] += 1
        self._retries.labels(self.processor, topic).inc()

    def set_in_flight(self, count: int) -> None:
        if count and not self._in_flight_now:
            # The stall is timed from here: the time with none in flight is no stall. (Set
            # before the count: a scrape between the two reads the old count.)
            self._progress_at = self._clock()
        self._in_flight_now = count

    def stalled_s(self) -> float:
        """Seconds events have been in flight with none finished (processed, skipped as a
        duplicate or dead-lettered); 0 with none in flight. Read from any thread: a processor
        whose transactions wait on a lock shows events in flight, its lag's age low and its
        database up, and only this grows."""
        if not self._in_flight_now:
            return 0.0
        return max(0.0, self._clock() - self._progress_at)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self._lags[(topic, partition)] = lag
        self._lag.labels(self.processor, topic, str(partition)).set(lag)

    def set_lag_answered_at(self, epoch_s: float | None) -> None:
        """When a fetch answer last gave the end offsets behind the lag (``None``: not known).

        The gauge works the age out when it is scraped, from the serving thread: set from the
        event loop, it froze at its last value ("0.03 s") while the loop was blocked (an async
        handler calling ``time.sleep``), just when an alert on it should fire.
        """
        self._answered_at = epoch_s

    def _lag_age_of_now(self) -> float:
        answered = self._answered_at
        return math.nan if answered is None else max(0.0, time.time() - answered)

    def set_database_down_since(self, monotonic_s: float | None) -> None:
        """The database unavailable since ``monotonic_s`` (``None``: it answers again)."""
        self._database_down_since = monotonic_s

    def forget_lag(self, topic: str, partition: int) -> None:
        if self._lags.pop((topic, partition), None) is not None:
            self._lag.remove(self.processor, topic, str(partition))

    def snapshot(self) -> MetricsSnapshot:
        return MetricsSnapshot(
            at=time.monotonic(),
            processed=self._counts["processed"],
            duplicates=self._counts["duplicates"],
            dead_lettered=dict(self._dead),
            retries=self._counts["retries"],
            in_flight=self._in_flight_now,
            lag=dict(self._lags),
            lag_age_s=None if self._answered_at is None else self._lag_age_of_now(),
            database_down_s=(
                None
                if self._database_down_since is None
                else time.monotonic() - self._database_down_since
            ),
            stalled_s=self.stalled_s(),
        )


def consumer_lag(highwater: int | None, position: int | None) -> int | None:
    """Messages behind the end of a partition, counted as Kafka's own tools count it.

    ``highwater`` is the partition's end offset (the offset the next message written gets);
    ``position`` is the consumer's fetch position, the offset it reads next. The lag is the
    difference, never below 0; ``None`` when either is unknown.

    Not "end offset - (last offset seen + 1)": a transaction's commit marker takes an offset of
    its own that no consumer ever receives as a message, so after a transactional write (a
    redrive, say) that count would stay at 1 for good. The fetch position moves past markers.
    """
    if highwater is None or highwater < 0 or position is None or position < 0:
        return None
    return max(0, highwater - position)


def summary_line(name: str, now: MetricsSnapshot, before: MetricsSnapshot | None) -> str:
    """``orders: 1,234 processed (410.5/s), 3 duplicates, 2 dead-lettered, 5 retries, lag 12``."""
    rate = ""
    if before is not None and now.at > before.at:
        rate = f" ({(now.processed - before.processed) / (now.at - before.at):,.1f}/s)"
    return (
        f"{name}: {now.processed:,} processed{rate}, {now.duplicates:,} duplicates skipped, "
        f"{now.dead_lettered_total:,} dead-lettered, {now.retries:,} retries, "
        f"{now.in_flight} in flight, lag {now.lag_total:,}{_lag_age(now.lag_age_s)}"
        + ("" if now.stalled_s < STALLED_AFTER_S else f"; none finished for {now.stalled_s:,.0f} s")
        + (
            ""
            if now.database_down_s is None
            else f"; the database unavailable for {now.database_down_s:,.0f} s"
        )
    )


#: A lag whose end offsets are older than this is said to be old: a consumer that fetches gets
#: them at least every few seconds, even from idle partitions.
LAG_STALE_S = 30.0

#: Events in flight this long with none finished are said to be stalled in the summary line
#: (a handler or a transaction waiting: a lock, a hung call, a database that does not answer).
STALLED_AFTER_S = 30.0


def _lag_age(age_s: float | None) -> str:
    if age_s is None or age_s < LAG_STALE_S:
        return ""
    return f" as of {age_s:,.0f} s ago (no fetch answered since)"
