"""A step of the processing engine that must succeed: tried until it does, or given up at close.

Writing a dead letter to Kafka and noting it in the inbox are such steps
(:func:`~pipeline.processing.dead_lettering.dead_letter`): Kafka or the database being away is
not the event's fault, and giving up would lose the event.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

from pipeline.retry import RetryPolicy

__all__ = ["GivenUp", "until_done"]

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
