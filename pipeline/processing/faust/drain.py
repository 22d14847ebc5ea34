"""Faust's fetch loop, without four asyncio tasks per message.

Faust's ``Consumer._drain_messages`` hands each fetched message to the conductor with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: ``mode``'s
``wait_first`` wraps the callback, the flow event and the service's stopped and crashed events
in four tasks and an ``asyncio.wait`` for every single message, about 70 µs on our machines:
more than Faust's fetching, decoding and our whole processing of the message together.

:func:`install` replaces that one method on one consumer with :func:`drain_messages`, the same
loop (read offsets, gap tracking, the commit-every count, dropping messages while the flow is
suspended for a rebalance) that awaits the callback directly. The processor's callback only
hands the message to the engine, so it cannot hang; while the engine is full it waits for room,
which a rebalance's drain makes. This is written by hand because Faust has no setting for it;
it is installed only on the Faust versions it was checked against, else Faust's loop stays.
"""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any

import faust

__all__ = ["drain_messages", "install"]

logger = logging.getLogger("pipeline.processing")

#: The faust-streaming versions whose ``Consumer._drain_messages`` this loop was checked against.
CHECKED_VERSIONS = ("0.15.",)


async def drain_messages(consumer: Any, fetcher: Any) -> None:
    """Faust 0.15's ``Consumer._drain_messages``, awaiting the callback without ``wait_first``."""
    callback = consumer.callback
    getmany = consumer.getmany
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = consumer._read_offset.__getitem__
    set_read_offset = consumer._read_offset.__setitem__
    flow_suspended = consumer.suspend_flow.is_set
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    commit_every = consumer._commit_every
    since_yield = 0
    while not (consumer_should_stop() or fetcher_should_stop()):
        messages = getmany(timeout=1.0)
        await asyncio.sleep(0)  # getmany may return at once, again and again
        if consumer.should_stop:
            continue
        async for tp, message in messages:
            since_yield += 1
            if since_yield > 100:  # let other tasks run during a long batch, as Faust does
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            read_offset = get_read_offset(tp)
            if read_offset is not None and offset < read_offset:
                continue  # already read (Faust drops these too)
            if read_offset and offset - read_offset > 1 and acks_enabled_for(message.topic):
                await consumer._add_gap(tp, read_offset + 1, offset)
            if commit_every is not None and consumer._n_acked >= commit_every:
                consumer._n_acked = 0
                await consumer.commit()
            if not flow_suspended():  # suspended for a rebalance: Faust drops it too
                await callback(message)
            set_read_offset(tp, offset)


def install(app: faust.App) -> bool:
    """Use :func:`drain_messages` for ``app``'s consumer; ``False`` (Faust's loop kept) on a
    Faust version it was not checked against."""
    if not faust.__version__.startswith(CHECKED_VERSIONS):
        logger.info(
            "faust-streaming %s: keeping Faust's own fetch loop (checked: %s)",
            faust.__version__,
            ", ".join(f"{version}x" for version in CHECKED_VERSIONS),
        )
        return False
    consumer = app.consumer
    consumer._drain_messages = types.MethodType(drain_messages, consumer)  # type: ignore[attr-defined]
    return True
