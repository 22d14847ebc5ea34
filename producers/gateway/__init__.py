"""The request gateway: ``POST /v1/requests/{type}`` -> a validated, acknowledged Kafka event.

Build it with :func:`create_app` (an aiohttp application over a producer you own) and run it with
:func:`serve`, or ``pipeline gateway``. The rate limiter and the idempotency store are pure and
usable on their own.
"""

from producers.gateway.app import GatewayProducer, create_app
from producers.gateway.health import KafkaHealth, KafkaHealthCheck
from producers.gateway.idempotency import IdempotencyKeyReused, IdempotencyStore, StoredAnswer
from producers.gateway.metrics import GatewayMetrics
from producers.gateway.rate_limit import RateDecision, TokenBucketLimiter
from producers.gateway.server import DeliveriesLeft, StoppedAtOnce, serve

__all__ = [
    "DeliveriesLeft",
    "GatewayMetrics",
    "GatewayProducer",
    "IdempotencyKeyReused",
    "IdempotencyStore",
    "KafkaHealth",
    "KafkaHealthCheck",
    "RateDecision",
    "StoppedAtOnce",
    "StoredAnswer",
    "TokenBucketLimiter",
    "create_app",
    "serve",
]
