"""Events that cannot be handled yet: what a processor's log says while they wait.

A handler raises :class:`~pipeline.processing.processor.NotYet` when its event cannot be
handled *yet* through no fault of its own (a saga orchestrator whose registry lacks the version
of a reply's saga, during a rolling deploy). The engine tries it again without limit, with the
backoff of a database outage, and never dead-letters it; its key's later events wait behind it.
It is no database outage, though: ``pipeline_database_up`` stays 1. While it waits it takes
no place of ``max_in_flight`` (other keys' events run), it waits at least :data:`WAIT_FLOOR_S`
between attempts, and a drain (a rebalance, the stop) ends its wait at once, uncommitted,
for the partition's next owner. As for a periodic task failing round after round
(:mod:`~pipeline.processing.periodic_failures`), the log says:

1. an event's first wait, at once (WARNING): its id, what it waits for (the exception's
   message), and that it is tried again without limit; once per event while this process
   runs (a rebalance that hands its partition back, or a drain that ended its wait, does not
   make it a first again: N waiting replies said N more WARNINGs at every rebalance);
2. the later waits (of every event of the processor) counted, and said at most once every
   ``every_s`` seconds (a minute), with the latest reason;
3. an event that waited and is finally handled, once (INFO), after how long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pipeline.database import error_text
from pipeline.plurals import counted
from pipeline.processing.attempt import record_log_context
from pipeline.processing.database_outage import OUTAGE_LOG_EVERY_S
from pipeline.processing.records import Record

__all__ = ["WAIT_FLOOR_S", "Waiting"]

logger = logging.getLogger("pipeline.processing")

#: Events whose first wait was said, remembered at most this many (the one seen longest ago
#: forgotten first).
_REMEMBERED = 10_000

#: The shortest wait between two attempts of an event that cannot be handled yet: a retry
#: policy's backoff may be 0, and such an event would be tried again without a pause, for ever.
WAIT_FLOOR_S = 0.1


class Waiting:
    """The waits of processor ``name``'s events (``clock``: monotonic seconds)."""

    def __init__(
        self,
        name: str,
        *,
        consumer_group: str,
        every_s: float = OUTAGE_LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._consumer_group = consumer_group
        self._every_s = every_s
        self._clock = clock
        #: When a wait was last logged; ``None`` before the first.
        self._logged_at: float | None = None
        #: Waits not logged since the last line.
        self._unsaid = 0
        #: When each waiting event's first wait began (step 1: said once per event).
        self._first: dict[str, float] = {}

    def waits(
        self,
        record: Record,
        event_id: str,
        error: BaseException,
        delay_s: float,
        since: float | None,
    ) -> float:
        """``event_id`` cannot be handled yet (``error`` says why); it is tried again in
        ``delay_s`` seconds. ``since``: when its first wait began (``None``: this is its
        first). Returns when its first wait began."""
        now = self._clock()
        if since is None:  # said already, before a drain ended its wait? (then the newest kept)
            since = self._first.pop(event_id, None)
            if since is not None:
                self._first[event_id] = since
        if since is None:
            if len(self._first) >= _REMEMBERED:
                del self._first[next(iter(self._first))]
            self._first[event_id] = now
            self._logged_at = now if self._logged_at is None else self._logged_at
            with record_log_context(record, event_id, self._consumer_group):
                logger.warning(
                    "%s: event %s cannot be handled yet (%s); it is tried again without limit "
                    "(next in %.1f s), never dead-lettered, and its key's later events wait "
                    "behind it (its further waits said at most every %.0f s)",
                    self._name,
                    event_id,
                    error_text(error),
                    delay_s,
                    self._every_s,
                )
            return now
        self._unsaid += 1
        if self._logged_at is not None and now - self._logged_at < self._every_s:
            return since
        self._logged_at = now
        with record_log_context(record, event_id, self._consumer_group):
            logger.warning(
                "%s: events still wait to be handled (%s since the last line); latest: event "
                "%s, waiting for %.0f s: %s",
                self._name,
                counted(self._unsaid, "wait"),
                event_id,
                now - since,
                error_text(error),
            )
        self._unsaid = 0
        return since

    def handled(self, record: Record, event_id: str, since: float, waits: int) -> None:
        """``event_id``, which first waited at ``since``, was handled after ``waits`` waits."""
        self._first.pop(event_id, None)
        with record_log_context(record, event_id, self._consumer_group):
            logger.info(
                "%s: event %s handled after waiting %.0f s (%s)",
                self._name,
                event_id,
                self._clock() - since,
                counted(waits, "wait"),
            )
