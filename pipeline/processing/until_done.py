"""A step of the processing engine that must succeed: tried until it does, or given up at close.

Writing a dead letter to Kafka and noting it in the inbox are such steps: Kafka or the
database being away is not the event's fault, and giving up would lose the event.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from functools import partial

from sqlalchemy.engine import Engine

from pipeline.dead_letters.letter import Failure, dead_letter_of
from pipeline.processing.attempt import record_dead_letter
from pipeline.processing.dead_lettering import DeadLetterSink, OutgoingDeadLetter
from pipeline.processing.records import Record
from pipeline.retry import RetryPolicy
from pipeline.topics.spec import dlq_name

__all__ = ["GivenUp", "dead_letter", "until_done"]

logger = logging.getLogger("pipeline.processing")


class GivenUp(Exception):
    """A step that must succeed failed after the engine was closed: given up."""


async def until_done(
    what: str,
    step: Callable[[], Awaitable[None]],
    *,
    name: str,
    retry: RetryPolicy,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]],
    closed: Callable[[], bool],
) -> None:
    """Run ``step`` until it succeeds, with ``retry``'s backoff (capped at its 8th), a WARNING
    of processor ``name`` saying it cannot ``what`` each time; :class:`GivenUp` when it fails
    once ``closed()``: the engine's worker threads are gone and trying again would fail for
    ever (the record stays uncommitted, so the next owner handles it again)."""
    tries = 0
    while True:
        try:
            await step()
            return
        except Exception as error:
            if closed():
                raise GivenUp(what) from error
            tries += 1
            delay = retry.delay(min(tries, 8), rng)
            logger.warning(
                "%s: cannot %s (%s); trying again in %.1f s",
                name,
                what,
                " ".join(str(error).split())[:200],
                delay,
            )
            await sleep(delay)


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
