"""A processor's periodic task failing round after round: what its log says meanwhile.

A task of :meth:`~pipeline.processing.processor.Processor.every` that fails is tried again at
its next round. While its database is away, each round failed with a WARNING of its own: the
saga orchestrator fires its deadlines every 0.2 s, so a 34 s outage made 164 lines (each also
shipped to the logs topic), and no line said when it worked again. As for the events
(:mod:`~pipeline.processing.database_outage`), now:

1. a task's first failure is logged at once;
2. its later failures are counted, and logged at most once every ``every_s`` seconds (a minute),
   with the latest error;
3. its first round that works after that says so, and after how long and how many failures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.database import error_text
from pipeline.plurals import counted
from pipeline.processing.database_outage import OUTAGE_LOG_EVERY_S

__all__ = ["PeriodicFailures"]

logger = logging.getLogger("pipeline.processing")


@dataclass
class _Failing:
    since: float
    logged_at: float
    failures: int = 1


class PeriodicFailures:
    """The failures of the periodic tasks of processor ``name``, by task (``clock``: monotonic
    seconds)."""

    def __init__(
        self,
        name: str,
        *,
        every_s: float = OUTAGE_LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._every_s = every_s
        self._clock = clock
        self._failing: dict[str, _Failing] = {}

    def failed(self, task: str, error: BaseException) -> None:
        """A round of ``task`` raised ``error``."""
        now = self._clock()
        failing = self._failing.get(task)
        if failing is None:
            self._failing[task] = _Failing(since=now, logged_at=now)
            logger.warning(
                "%s: periodic task %s failed (%s); it runs again at its next round (said again "
                "at most every %.0f s while it fails)",
                self._name,
                task,
                error_text(error, most=200),
                self._every_s,
            )
            return
        failing.failures += 1
        if now - failing.logged_at < self._every_s:
            return
        failing.logged_at = now
        logger.warning(
            "%s: periodic task %s still fails after %.0f s (%s so far): %s",
            self._name,
            task,
            now - failing.since,
            counted(failing.failures, "failed round"),
            error_text(error, most=200),
        )

    def worked(self, task: str) -> None:
        """A round of ``task`` worked: the end of its failures, if it had any."""
        failing = self._failing.pop(task, None)
        if failing is None:
            return
        logger.info(
            "%s: periodic task %s works again, after %.0f s failing (%s)",
            self._name,
            task,
            self._clock() - failing.since,
            counted(failing.failures, "failed round"),
        )
