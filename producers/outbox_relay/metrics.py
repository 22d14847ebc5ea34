"""The relay's Prometheus metrics."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.outbox.table import OutboxStatus

__all__ = ["RelayMetrics"]


class RelayMetrics:
    """The relay's Prometheus metrics, in their own registry (several relays per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "pipeline_outbox_published",
            "Outbox events acknowledged by Kafka and marked published by this relay",
            ["topic"],
            registry=r,
        )
        self.failed = Counter(
            "pipeline_outbox_publish_failures",
            "Outbox events sent and not acknowledged by Kafka (left unpublished, sent again "
            "later); rows held back, never sent, are not counted",
            registry=r,
        )
        self.batches = Counter(
            "pipeline_outbox_batches",
            "Batches of which some events were published",
            registry=r,
        )
        self.held = Gauge(
            "pipeline_outbox_held_rows",
            "Outbox rows this relay holds back, not sent, at their last try (topic missing, "
            "too large, or behind such a row or a failed one of their aggregate), by the "
            "topic of the row that holds them",
            ["topic", "reason"],
            registry=r,
        )
        self.deleted = Counter(
            "pipeline_outbox_deleted", "Published rows deleted after their retention", registry=r
        )
        self.backlog = Gauge(
            "pipeline_outbox_backlog",
            "Outbox rows not yet published (all relays); NaN while it cannot be read",
            registry=r,
        )
        self.oldest_age = Gauge(
            "pipeline_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none; NaN while it cannot be read)",
            registry=r,
        )
        self.rate = Gauge(
            "pipeline_outbox_publish_rate",
            "Outbox events published per second over the last minute (all relays); NaN while it "
            "cannot be read",
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
            "first batch",
            registry=r,
        )
        self.database_up.set(math.nan)

    def observe(self, status: OutboxStatus) -> None:
        self.backlog.set(status.backlog)
        self.oldest_age.set(status.oldest_unpublished_age_s or 0.0)
        self.rate.set(status.publish_rate_per_s)

    def unknown(self) -> None:
        """The outbox status cannot be read: its gauges say so (NaN) rather than keep the
        last figures, which read as current."""
        for gauge in (self.backlog, self.oldest_age, self.rate):
            gauge.set(math.nan)
