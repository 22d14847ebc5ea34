"""The gateway's Prometheus metrics, on a registry of their own (never the global one).

- ``gateway_requests_total{type, status}``: every answer of ``POST /v1/requests/{type}``; an
  unknown type is counted as ``type="unknown"`` so URLs cannot grow the label set;
- ``gateway_produce_latency_seconds{topic}``: from handing the event to the producer to the
  broker's acknowledgement (or the failure), the part of a request's latency that is Kafka's;
- ``gateway_rejections_total{reason}``: every error answer, by its error code;
- ``gateway_idempotent_replays_total``: answers replayed for a repeated Idempotency-Key;
- ``gateway_idempotency_keys_evicted_total``: Idempotency-Keys the memory store forgot before
  their TTL because it held ``idempotency_max_keys`` (a retry with one produces again);
- ``gateway_api_keys_last_read_timestamp_seconds``: when the API keys were last read from the
  database (Unix time; with ``--workers``, the oldest of the workers'): ``time() -`` it is how
  stale they are (past ``keys_max_stale_s``, requests with a key are refused).

Under ``pipeline gateway --workers N`` each worker counts in files of its own in a folder the
parent made (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), and
``/metrics``, whichever worker answers it, sums every worker's figures: a scrape reached one
worker at random and showed only its counts, which went down and up from one scrape to the next.
A family no worker has a figure of yet (``gateway_produce_latency_seconds`` before the first
event, ``gateway_rejections_total`` before the first refusal) is still listed, without samples,
as one gateway lists it: the workers' files hold only figures, and the sum left it out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

#: Where the workers of one ``pipeline gateway --workers`` keep their figures (set by it).
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

UNKNOWN_TYPE = "unknown"

# Acknowledgements take a few ms on a healthy cluster; the top buckets catch retries and outages.
_PRODUCE_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class GatewayMetrics:
    """The gateway's counters and histograms; :meth:`exposition` renders them for ``/metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "Answers to POST /v1/requests/{type}, by request type and HTTP status.",
            ["type", "status"],
            registry=self.registry,
        )
        self.produce_latency = Histogram(
            "gateway_produce_latency_seconds",
            "From handing an event to the producer to the broker's acknowledgement or failure.",
            ["topic"],
            buckets=_PRODUCE_BUCKETS,
            registry=self.registry,
        )
        self.rejections = Counter(
            "gateway_rejections",
            "Error answers, by error code.",
            ["reason"],
            registry=self.registry,
        )
        self.replays = Counter(
            "gateway_idempotent_replays",
            "Answers replayed for a repeated Idempotency-Key (nothing produced).",
            registry=self.registry,
        )

        self.keys_evicted = Counter(
            "gateway_idempotency_keys_evicted",
            "Idempotency-Keys forgotten before their TTL because the memory store was full.",
            registry=self.registry,
        )
        self.keys_read = Gauge(
            "gateway_api_keys_last_read_timestamp_seconds",
            "When the API keys were last read from the database (Unix time).",
            registry=self.registry,
            multiprocess_mode="min",  # the stalest worker's
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: every worker's, summed, under ``--workers``."""
        folder = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
        if not folder:
            return generate_latest(self.registry)
        summed = list(
            MultiProcessCollector(None, path=folder).collect()  # type: ignore[no-untyped-call]
        )
        seen = {family.name for family in summed}
        # This process's families with no figure in any worker's files: listed empty.
        summed += [
            Metric(family.name, family.documentation, family.type)
            for family in self.registry.collect()
            if family.name not in seen
        ]
        return generate_latest(_Families(summed))


class _Families:
    """Families already collected, for :func:`generate_latest` (which asks ``collect()``)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families
