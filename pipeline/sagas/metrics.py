"""Prometheus metrics of the saga orchestrator."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SagaMetrics"]

_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class SagaMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.by_state = Gauge(
            "pipeline_sagas",
            "Saga instances by definition and state (from the database).",
            ["saga", "state"],
            registry=self.registry,
        )
        self.transitions = Counter(
            "pipeline_saga_transitions",
            "Saga timeline entries: sent, succeeded, failed, timed out, compensated, ...",
            ["saga", "what"],
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "pipeline_saga_step_seconds",
            "From a command sent to its reply applied.",
            ["saga", "step", "kind"],
            buckets=_STEP_BUCKETS,
            registry=self.registry,
        )
        self.ignored_replies = Counter(
            "pipeline_saga_replies_ignored",
            "Replies that changed nothing: duplicate (answered before) or late (timed out).",
            ["saga", "outcome"],
            registry=self.registry,
        )
        self.timeouts = Counter(
            "pipeline_saga_timeouts",
            "Commands that got no reply within their step's timeout.",
            ["saga", "step", "kind"],
            registry=self.registry,
        )
        self.compensations = Counter(
            "pipeline_saga_compensations",
            "Compensations sent (every attempt).",
            ["saga", "step"],
            registry=self.registry,
        )
        self.replies_behind = Gauge(
            "pipeline_saga_replies_behind_seconds",
            "How long ago the moment is before which every reply sent has been applied (the "
            "consumer group's committed offsets); timeouts due since then wait. +Inf: not "
            "known yet since the start.",
            registry=self.registry,
        )
        self.deleted = Counter(
            "pipeline_sagas_deleted",
            "Ended sagas deleted after their retention (sagas.retention_s).",
            ["saga", "state"],
            registry=self.registry,
        )
