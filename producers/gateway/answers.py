"""The gateway's answers: JSON errors, and the 202 or 503 once Kafka has (or has not) reported.

Every error is an :class:`ErrorAnswer`, raised where it is found and turned into the JSON body
``{"error": {"code", "message", "details"}}`` by the application's middleware.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.kafka.producer import Delivery
from producers.gateway.idempotency import StoredAnswer

__all__ = [
    "JSON_CONTENT_TYPE",
    "ErrorAnswer",
    "accepted_answer",
    "delivery_answer",
    "dumps",
    "kafka_unavailable",
    "not_acknowledged",
    "still_in_flight",
    "store_unavailable",
    "unknown_request_type",
]

JSON_CONTENT_TYPE = "application/json"


class ErrorAnswer(Exception):
    """An error answer: status, a stable code, one readable line and optional details (and
    headers; ``close``: the connection closes after it)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})
        #: Close the connection after the answer (the request's body was left unread).
        self.close = close

    def body(self) -> bytes:
        """The JSON body: ``{"error": {"code", "message", "details"}}``."""
        return dumps(
            {"error": {"code": self.code, "message": self.message, "details": self.details}}
        )


def dumps(payload: Any) -> bytes:
    """``payload`` as compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def accepted_answer(delivery: Delivery) -> StoredAnswer:
    """202 with where Kafka put the event."""
    return StoredAnswer(
        202,
        dumps(
            {
                "event_id": delivery.event_id,
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
            }
        ),
    )


def not_acknowledged(reason: str) -> StoredAnswer:
    """503: the event is not known to be recorded, for ``reason``."""
    answer = ErrorAnswer(
        503,
        "not_acknowledged",
        f"Kafka did not acknowledge the request ({reason}); it is not known to be recorded: "
        "retry it with the same Idempotency-Key (without one, a retry may make a second event)",
    )
    return StoredAnswer(answer.status, answer.body())


def delivery_answer(delivered: asyncio.Future[Delivery]) -> StoredAnswer:
    """The answer for a settled delivery future: 202 where Kafka put it, else 503."""
    if delivered.cancelled():
        return not_acknowledged("its delivery report was cancelled")
    error = delivered.exception()
    if error is not None:
        return not_acknowledged(f"its delivery report failed: {error}")
    delivery = delivered.result()
    if not delivery.ok:
        return not_acknowledged(f"delivery failed: {delivery.error}")
    return accepted_answer(delivery)


#: A 409 for a claim of this process (never expiring: its delivery report settles it): a
#: retry that meets it again waits ``produce_timeout_s`` for the answer before its own 409.
IN_FLIGHT_RETRY_AFTER_S = 1
#: The shared Idempotency-Key store's database did not answer (a lost connection is retried at
#: once on a new one, so this is an outage: a restart or a failover takes seconds).
STORE_UNAVAILABLE_RETRY_AFTER_S = 5


def still_in_flight(claimed_s_ago: float | None, expires_in_s: float | None) -> ErrorAnswer:
    """409 for a key whose first request has no answer yet, saying only what is known: when
    it was claimed, if the store knows (``None``: it does not; the shared store does not), and,
    for a claim that frees itself (the shared store's lease), when; its ``Retry-After`` is then
    the seconds until that moment, when either its answer is stored or a retry is handled
    anew."""
    if expires_in_s is None:
        claimed = (
            "was claimed" if claimed_s_ago is None else f"was claimed {claimed_s_ago:.0f} s ago"
        )
        what = (
            f"{claimed} by this gateway process and has no answer yet: its event is still "
            "waiting for Kafka's acknowledgement (librdkafka is still trying)"
        )
        retry_after = IN_FLIGHT_RETRY_AFTER_S
    else:
        retry_after = max(1, math.ceil(expires_in_s))
        since = (
            "is being handled"
            if claimed_s_ago is None
            else f"was claimed {claimed_s_ago:.0f} s ago"
        )
        what = (
            f"{since} and has no answer yet (its gateway may still be waiting for Kafka's "
            "acknowledgement, or may have stopped); the claim expires in "
            f"{retry_after} s, after which a retry is handled anew"
        )
    return ErrorAnswer(
        409,
        "request_in_flight",
        f"a request with this Idempotency-Key {what}: retry with the same Idempotency-Key to "
        "get its answer",
        [{"field": "Idempotency-Key", "message": "still in flight"}],
        headers={"Retry-After": str(retry_after)},
    )


#: Kafka does not answer, or the request's topic does not exist: the health check asks again
#: every second meanwhile, but an outage or a missing topic takes more than that to mend.
KAFKA_UNAVAILABLE_RETRY_AFTER_S = 5


def kafka_unavailable(problem: str) -> ErrorAnswer:
    """503 at once: ``problem`` (what ``/healthz`` says) stands; nothing was produced."""
    return ErrorAnswer(
        503,
        "kafka_unavailable",
        f"{problem}; nothing was produced: send the request again once GET /healthz answers 200",
        headers={"Retry-After": str(KAFKA_UNAVAILABLE_RETRY_AFTER_S)},
    )


def store_unavailable(reason: str) -> ErrorAnswer:
    """503: the shared Idempotency-Key store cannot be asked; nothing was produced."""
    return ErrorAnswer(
        503,
        "idempotency_unavailable",
        f"{reason}; nothing was produced: retry with the same Idempotency-Key",
        headers={"Retry-After": str(STORE_UNAVAILABLE_RETRY_AFTER_S)},
    )


def unknown_request_type(name: str, known: Sequence[str]) -> ErrorAnswer:
    """404: no request type ``name`` (``known``: those there are, sorted)."""
    return ErrorAnswer(
        404,
        "unknown_request_type",
        f"unknown request type {name!r}; known: {', '.join(known)}",
        [{"field": "type", "message": "unknown request type", "known": list(known)}],
    )
