"""A processor's dead letter on its way to ``<topic>.dlq``, and the line that says it went.

:func:`dead_letter` sends it (until Kafka takes it), then notes it in the inbox (until the
database takes it).

Kafka refusing a dead letter as too large (the dead-letter topic's ``max.message.bytes``, or the
client's ``message.max.bytes``) would refuse it for ever, and trying again would hold the
partition: the letter then goes without its value (:func:`~pipeline.dead_letters.letter.
without_value`), which stays in the original topic, where ``pipeline dlq redrive`` reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

from sqlalchemy.engine import Engine

from pipeline.dead_letters.letter import (
    DeadLetterTooLarge,
    Failure,
    dead_letter_of,
    without_large_headers,
    without_value,
)
from pipeline.envelope import KafkaMessage
from pipeline.processing.attempt import record_dead_letter
from pipeline.processing.records import Record
from pipeline.topics.spec import dlq_name

__all__ = ["DeadLetterSink", "OutgoingDeadLetter", "dead_letter", "log_dead_letter"]

logger = logging.getLogger("pipeline.processing")


class DeadLetterSink(Protocol):
    """Where dead letters go: ``send`` returns once Kafka acknowledged the letter, and raises
    :class:`DeadLetterTooLarge` when Kafka refuses it as too large."""

    async def send(self, topic: str, message: KafkaMessage) -> None: ...


class OutgoingDeadLetter:
    """The dead letter of ``record`` for ``topic``: :meth:`send` it until it goes (whole, or
    cut down when Kafka refuses it as too large)."""

    def __init__(
        self, sink: DeadLetterSink, topic: str, message: KafkaMessage, *, record: Record, about: str
    ) -> None:
        self._sink = sink
        self.topic = topic
        self.message = message
        self._record = record
        self._about = about  # "<processor>: dead letter <event id>", for the log line

    async def send(self) -> None:
        """Whole, else without its value, else without its large headers too; each try starts
        whole again (the topic's limit may have been raised meanwhile). A letter too large even
        then (a huge key) raises: the caller says so and tries again until it goes."""
        try:
            await self._sink.send(self.topic, self.message)
            return
        except DeadLetterTooLarge as refused:
            refusal = refused
        for cut, left_out in (
            (without_value(self.message), "its value"),
            (without_large_headers(self.message), "its value and its headers over 1 KiB"),
        ):
            try:
                await self._sink.send(self.topic, cut)
            except DeadLetterTooLarge:
                continue
            record = self._record
            logger.error(
                "%s was too large for %s (%s): sent without %s (%s bytes of value); the "
                "original stays at %s[%d]@%d, where dlq redrive reads it",
                self._about,
                self.topic,
                " ".join(str(refusal).split())[:200],
                left_out,
                f"{len(record.value or b''):,}",
                record.topic,
                record.partition,
                record.offset,
            )
            return
        raise refusal  # even its key and dlq.* headers are too large: said, tried again


def log_dead_letter(
    processor: str, record: Record, event_id: str, topic: str, failure: Failure
) -> None:
    """The line of a dead letter sent (with the error's type and message as fields): an ERROR;
    a WARNING for one sent behind a parked key (``key_parked``), whose cause, the letter that
    parked the key, was the ERROR (one bad event early in a busy key's stream made hundreds of
    ERROR lines of one cause)."""
    logger.log(
        logging.WARNING if failure.reason == "key_parked" else logging.ERROR,
        "%s: dead-lettered %s from %s[%d]@%d to %s: %s (%s: %s)",
        processor,
        event_id,
        record.topic,
        record.partition,
        record.offset,
        topic,
        failure.reason,
        failure.error_type,
        failure.message[:300],
        extra={
            "event_action": "dead_lettered",
            "event_outcome": "failure",
            "error_type": failure.error_type,
            "error_message": failure.message[:2000],
        },
    )


async def dead_letter(
    record: Record,
    event_id: str,
    failure: Failure,
    *,
    name: str,
    sink: DeadLetterSink,
    database: Engine,
    consumer_group: str,
    park_keys: bool,
    in_thread: Callable[[Callable[[], None]], Awaitable[None]],
    until_done: Callable[[str, Callable[[], Awaitable[None]]], Awaitable[None]],
) -> None:
    """Send ``record``'s dead letter to its DLQ topic through ``sink`` (until Kafka takes it),
    then note it in the inbox (``in_thread``, until the database takes it), each step run by
    ``until_done`` (the engine's: given up at close); ``name``: the processor's."""
    topic = dlq_name(record.topic)
    letter = OutgoingDeadLetter(
        sink,
        topic,
        dead_letter_of(record, consumer_group=consumer_group, failure=failure),
        record=record,
        about=f"{name}: dead letter {event_id}",
    )
    await until_done(f"write dead letter {event_id} to {topic}", letter.send)
    note = partial(
        record_dead_letter,
        record,
        engine=database,
        consumer_group=consumer_group,
        event_id=event_id,
        failure=failure,
        park_keys=park_keys,
    )
    await until_done(f"note dead letter {event_id} in the inbox", lambda: in_thread(note))
