"""What became of a sent event (:class:`Delivery`), and the event producer's errors: a refusal
at once, a failed delivery, a flush that gave up waiting, an aborted transaction.

Apart from :mod:`pipeline.kafka.producer`, which re-exports them, so that a caller that only
handles what came of a send need not know the producer's workings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from confluent_kafka import KafkaError, Message

from pipeline.errors import PipelineError

__all__ = [
    "Delivery",
    "DeliveryError",
    "FlushTimeout",
    "ProduceRefused",
    "TransactionAborted",
    "delivery_of",
    "event_id_of",
]


class Delivery(NamedTuple):
    """What became of one event: where it landed, or why it did not."""

    event_id: str
    topic: str
    key: bytes | None
    partition: int | None
    offset: int | None
    error: str | None = None
    retriable: bool = False
    #: The broker (or the client) refused it as larger than the topic's (or its) limit.
    too_large: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def event_id_of(headers: Sequence[tuple[str, bytes]]) -> str:
    for name, value in headers:
        if name == "ce_id":
            return value.decode("utf-8", errors="replace")
    return "?"


def delivery_of(event_id: str, error: KafkaError | None, produced: Message) -> Delivery:
    topic, key = produced.topic() or "", produced.key()
    if error is None:
        return Delivery(event_id, topic, key, produced.partition(), produced.offset())
    return Delivery(
        event_id,
        topic,
        key,
        None,
        None,
        error.str(),
        error.retriable(),
        error.code() == KafkaError.MSG_SIZE_TOO_LARGE,
    )


class ProduceRefused(PipelineError):
    """librdkafka refused an event at once (too large, unknown partition...): nothing was queued."""

    def __init__(self, topic: str, reason: str, *, too_large: bool = False) -> None:
        self.topic = topic
        self.reason = reason
        #: Refused as larger than the client's message.max.bytes.
        self.too_large = too_large
        super().__init__(f"the event for {topic} was refused: {reason}")


class TransactionAborted(PipelineError):
    """The commit failed in a way that required an abort: nothing of the transaction is visible."""


class FlushTimeout(PipelineError):
    """A flush gave up waiting with ``remaining`` events still unacknowledged.

    They are not lost yet: the client still holds them, and a later flush may see them
    delivered or failed.
    """

    def __init__(self, remaining: int, timeout_s: float) -> None:
        self.remaining = remaining
        self.timeout_s = timeout_s
        super().__init__(f"{remaining} events were still unacknowledged after {timeout_s:.0f} s")


class DeliveryError(PipelineError):
    """One or more events were not acknowledged by the broker."""

    def __init__(self, failures: Sequence[Delivery]) -> None:
        self.failures = tuple(failures)
        first = self.failures[0]
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        super().__init__(f"event {first.event_id} to {first.topic} failed: {first.error}{more}")
