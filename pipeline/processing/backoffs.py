"""Backoffs that end at once when their partition is revoked or the engine closes.

An event that cannot be handled yet (:class:`~pipeline.processing.processor.NotYet`) or that
waits out a database outage sleeps between its attempts, up to the retry policy's longest
backoff. Nothing of it runs meanwhile (no worker thread, no transaction), so a drain need not
wait for it: :meth:`Backoffs.end` ends the sleeps of the drained partitions, and each such
event ends as :class:`~pipeline.processing.until_done.GivenUp`, uncommitted, for the next owner.
Until the drain is over (:meth:`Backoffs.resume`), a backoff of those partitions ends as it
begins: an attempt that was running when the drain began, and found it must wait, would
otherwise have slept past the drain (which then waited for it) and then taken a place back
for a work the drain had forgotten (a code review).

:func:`log_retry` says why a failed attempt is retried after its backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection

from pipeline.processing.attempt import AttemptResult, record_log_context
from pipeline.processing.records import Record
from pipeline.processing.until_done import GivenUp

__all__ = ["Backoffs", "TopicPartition", "log_retry"]

logger = logging.getLogger("pipeline.processing")

TopicPartition = tuple[str, int]


class Backoffs:
    """The backoff sleeps in progress, per partition (one asyncio loop)."""

    def __init__(self) -> None:
        #: Per partition: resolved by :meth:`end` (made again by the next sleep).
        self._ends: dict[TopicPartition, asyncio.Future[None]] = {}
        #: Partitions being drained: their backoffs end as they begin.
        self._ended: set[TopicPartition] = set()

    async def sleep(self, tp: TopicPartition, step: Awaitable[None]) -> None:
        """Await ``step`` (a sleep, or a wait for a place); :class:`GivenUp` when :meth:`end`
        ended ``tp``'s backoffs first (``step`` is cancelled then), or at once while ``tp`` is
        being drained (``step`` is not run)."""
        if tp in self._ended:
            if asyncio.iscoroutine(step):
                step.close()
            raise GivenUp(f"backoff of {tp[0]}[{tp[1]}]")
        end = self._ends.get(tp)
        if end is None or end.done():
            end = self._ends[tp] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(step)
        try:
            await asyncio.wait((task, end), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():  # ended, or this task itself cancelled
                task.cancel()
                # Waited for without taking its CancelledError as this task's own: a cancel
                # of this task meanwhile is raised here, not swallowed.
                await asyncio.wait((task,))
        if end.done():  # its partition is being drained: it ends here, uncommitted
            raise GivenUp(f"backoff of {tp[0]}[{tp[1]}]")
        task.result()  # its error, if any (a cancelled sleep: CancelledError)

    def end(self, partitions: Collection[TopicPartition]) -> None:
        """End the backoffs of ``partitions`` now, and those that begin until :meth:`resume`:
        their events end, uncommitted."""
        self._ended.update(partitions)
        for tp in partitions:
            end = self._ends.pop(tp, None)
            if end is not None and not end.done():
                end.set_result(None)

    def resume(self, partitions: Collection[TopicPartition]) -> None:
        """The drain of ``partitions`` is over: their backoffs (a new owner's) run again."""
        self._ended.difference_update(partitions)


def log_retry(
    name: str,
    consumer_group: str,
    record: Record,
    outcome: AttemptResult,
    failures: int,
    delay_s: float,
) -> None:
    """Processor ``name``'s INFO line: attempt ``failures`` of ``outcome``'s event failed, and
    it is tried again in ``delay_s`` seconds."""
    error = outcome.error
    with record_log_context(record, outcome.event_id, consumer_group):
        logger.info(
            "%s: attempt %d of %s failed (%s: %s); retrying in %.2f s",
            name,
            failures,
            outcome.event_id,
            type(error).__name__,
            " ".join(str(error).split())[:200],
            delay_s,
            extra={"event_action": "retried"},
        )
