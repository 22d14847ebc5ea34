"""How far behind the orchestrators read the saga replies, as a gauge and a warning.

A step's timeout waits until the replies that reached the replies topic before its deadline
are applied (see :mod:`pipeline.processing.read_through`). :class:`RepliesBehind` turns the
runtime's answer into the moment the orchestrator fires timeouts up to, sets
``pipeline_saga_replies_behind_seconds`` and says, once a minute, when timeouts wait long.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import Gauge

from pipeline.processing.read_through import TopicProgress

__all__ = ["NOTHING_READ", "REPLIES_BEHIND_WARNING_S", "RepliesBehind"]

logger = logging.getLogger("pipeline.sagas")

#: How far behind the replies may be read before the orchestrator warns that timeouts wait.
REPLIES_BEHIND_WARNING_S = 30.0
#: The read-through time while the runtime does not know one yet: no timeout fires.
NOTHING_READ = datetime.min.replace(tzinfo=UTC)


class RepliesBehind:
    """The replies topic ``topic`` as the orchestrator's timeouts see it."""

    def __init__(self, topic: str, gauge: Gauge, clock: Callable[[], datetime]) -> None:
        self.topic = topic
        self.gauge = gauge
        self.clock = clock
        self._since: datetime | None = None  # the start, or the first question
        self._warned_at: datetime | None = None

    def not_known_yet(self) -> None:
        """From now on (a start), how far the replies are read is not known: the gauge says
        +Inf, and the warning counts the time from here."""
        self._since = self.clock()
        self.gauge.set(math.inf)

    def read_through(self, progress: TopicProgress | None) -> datetime | None:
        """The moment before which every reply that reached the topic has been applied, from
        the runtime's ``progress`` (``None`` without one: timeouts then fire at their
        deadlines; :data:`NOTHING_READ` while not known)."""
        if progress is None:
            return None
        moment = progress.read_through(self.topic)
        now = self.clock()
        if self._since is None:
            self._since = now
        behind = now - (moment if moment is not None else self._since)
        self.gauge.set(max(behind.total_seconds(), 0.0) if moment is not None else math.inf)
        if behind.total_seconds() <= REPLIES_BEHIND_WARNING_S:
            self._warned_at = None
        elif self._warned_at is None or now - self._warned_at >= timedelta(minutes=1):
            self._warned_at = now
            how_far = (
                f"are applied only up to {moment.isoformat(timespec='seconds')}"
                if moment is not None
                else "are not known to be applied yet (since this orchestrator started)"
            )
            logger.warning(
                "timeouts wait: the replies that reached %s %s, %.0f s behind; a step's "
                "timeout fires once the replies that came before its deadline are applied",
                self.topic,
                how_far,
                behind.total_seconds(),
            )
        return moment if moment is not None else NOTHING_READ
