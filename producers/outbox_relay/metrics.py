"""The relay's Prometheus metrics, and how long since its loop last finished a round.

The gauges that tell whether the relay goes on are worked out when scraped (the server's own
thread), not set by the relay's loop: set from it, they froze at their last figures while a
round waited (``lock table pipeline_outbox`` for 45 s: the oldest row's age stayed at 6.08 s and
nothing said the relay had stalled).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.outbox.table import OutboxStatus

__all__ = ["STALLED_AFTER_S", "STATUS_INTERVAL_S", "STATUS_STALE_S", "RelayMetrics"]

#: How often backlog, age and rate are refreshed from the database (metrics, log line): not
#: more often, as the rate counts the rows published in the last minute (millions at full speed).
STATUS_INTERVAL_S = 5.0
#: Figures read longer ago than three refreshes are shown as unknown (NaN): the reads stopped
#: (the loop waits in a round, or on the read itself), and they no longer tell the present.
STATUS_STALE_S = 3 * STATUS_INTERVAL_S
#: A relay that finished no round for this long is said to be stalled in its log line.
STALLED_AFTER_S = 10.0


class RelayMetrics:
    """The relay's Prometheus metrics, in their own registry (several relays per process).

    The relay's loop tells it what it does (:meth:`now_doing`) and when a round is finished
    (:meth:`round_finished`); ``clock`` (monotonic seconds) times both, and the age of the
    status figures.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._clock = clock
        r = self.registry
        self.published = Counter(
            "pipeline_outbox_published",
            "Outbox events acknowledged by Kafka and marked published by this relay",
            ["topic"],
            registry=r,
        )
        self.failed = Counter(
            "pipeline_outbox_publish_failures",
            "Sends of outbox events Kafka did not acknowledge (failed, refused as too large, "
            "or not settled in time; left unpublished), every send counted; a try at which a "
            "row is held back (not sent) is not",
            registry=r,
        )
        self.batches = Counter(
            "pipeline_outbox_batches",
            "Batches of which some events were published",
            registry=r,
        )
        self.held = Gauge(
            "pipeline_outbox_held_rows",
            "Outbox rows this relay holds back (not published; not sent at their last try): "
            "topic missing, too large (by the relay's check, or refused by Kafka when sent "
            "before), or behind such a row or a failed one of their aggregate; by the topic of "
            "the row that holds them",
            ["topic", "reason"],
            registry=r,
        )
        self.deleted = Counter(
            "pipeline_outbox_deleted", "Published rows deleted after their retention", registry=r
        )
        self.backlog = Gauge(
            "pipeline_outbox_backlog",
            "Outbox rows not yet published (all relays); NaN while it cannot be read, or was "
            "last read more than 15 s ago",
            registry=r,
        )
        self.oldest_age = Gauge(
            "pipeline_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none; NaN while it cannot be read, "
            "or was last read more than 15 s ago)",
            registry=r,
        )
        self.rate = Gauge(
            "pipeline_outbox_publish_rate",
            "Outbox events published per second over the last minute (all relays); NaN while it "
            "cannot be read, or was last read more than 15 s ago",
            registry=r,
        )
        self.lease_held = Gauge(
            "pipeline_outbox_lease_held",
            "1 while this relay holds the lease (SQLite), else 0",
            registry=r,
        )
        self.database_up = Gauge(
            "pipeline_outbox_database_up",
            "1 while this relay's batches can use its database, 0 while they fail on a database "
            "error (it cannot be reached, or refuses the relay's statements); NaN before the "
            "first batch. A round that waits (a lock, a database that does not answer) is no "
            "error: see pipeline_outbox_stalled_seconds",
            registry=r,
        )
        self.database_up.set(math.nan)
        self.stalled = Gauge(
            "pipeline_outbox_stalled_seconds",
            "Seconds since this relay last finished a round (a claim of its due rows, sent and "
            "marked, whether anything was published or not); about 0 while it waits for new "
            "rows. Grows while a round waits (a lock on the outbox table, a database or Kafka "
            "that does not answer) or its batches fail",
            registry=r,
        )
        #: The last status read: (when, backlog, oldest age, rate); ``None``: unknown.
        self._status: tuple[float, float, float, float] | None = None
        for index, gauge in enumerate((self.backlog, self.oldest_age, self.rate), start=1):
            gauge.set_function(partial(self._figure, index))
        now = clock()
        self._finished_at = now
        self._doing, self._doing_since = "starting", now
        #: Seconds per thing done since the last round finished (what a stall waited on).
        self._spent: dict[str, float] = {}
        #: The longest stalled round since :meth:`take_stall`: (seconds, what it waited on).
        self._stall: tuple[float, str] | None = None
        self._stall_lock = threading.Lock()
        self.stalled.set_function(self.stalled_s)
        #: The (topic, reason) labels of the held-rows gauge set so far (set to 0 when none).
        self._held_labels: set[tuple[str, str]] = set()

    def observe(self, status: OutboxStatus) -> None:
        self._status = (
            self._clock(),
            float(status.backlog),
            status.oldest_unpublished_age_s or 0.0,
            status.publish_rate_per_s,
        )

    def unknown(self) -> None:
        """The outbox status cannot be read: its gauges say so (NaN) rather than keep the
        last figures, which read as current."""
        self._status = None

    def status_fresh(self) -> bool:
        """Whether the status was read, and not more than :data:`STATUS_STALE_S` ago."""
        status = self._status
        return status is not None and self._clock() - status[0] <= STATUS_STALE_S

    def _figure(self, index: int) -> float:
        status = self._status
        if status is None or self._clock() - status[0] > STATUS_STALE_S:
            return math.nan
        return status[index]

    def show_held(self, counts: Mapping[tuple[str, str], int]) -> None:
        """The held-rows gauge: ``counts`` by (topic, reason); labels no longer held are 0."""
        for labels in self._held_labels - counts.keys():
            self.held.labels(*labels).set(0)
        for labels, count in counts.items():
            self.held.labels(*labels).set(count)
        self._held_labels |= counts.keys()

    # ---- rounds (told by the relay's loop; read from any thread) ---------------------------

    def now_doing(self, what: str) -> None:
        """The relay's loop does ``what`` now (``claiming rows``, ...): a stall names it."""
        now = self._clock()
        done = self._doing
        self._spent[done] = self._spent.get(done, 0.0) + (now - self._doing_since)
        self._doing, self._doing_since = what, now

    def round_finished(self, then: str = "between rounds") -> None:
        """A round is finished (rows claimed, sent and marked, or none due); ``then``: what the
        loop does next. While it waits for new rows it calls this every slice of its wait: that
        wait is no stall."""
        self.now_doing(then)
        now = self._doing_since
        took = now - self._finished_at
        if took >= STALLED_AFTER_S:
            waited_on = max(self._spent.items(), key=lambda item: item[1])[0]
            with self._stall_lock:
                if self._stall is None or took > self._stall[0]:
                    self._stall = (took, waited_on)
        self._finished_at = now
        self._spent = {}

    def stalled_s(self) -> float:
        """Seconds since the last round finished (the relay's start, before the first)."""
        return max(0.0, self._clock() - self._finished_at)

    def current_stall(self) -> tuple[float, str]:
        """:meth:`stalled_s`, and what the loop does now."""
        return self.stalled_s(), self._doing

    def take_stall(self) -> tuple[float, str] | None:
        """The longest round of at least :data:`STALLED_AFTER_S` finished since the last call,
        and what it waited on longest; ``None``: none."""
        with self._stall_lock:
            stall, self._stall = self._stall, None
        return stall
