"""Rebalances as a processor tells them, and how long its drain may take inside one.

aiokafka (Faust's Kafka client) has only Kafka's eager rebalance protocol: whenever a member
joins or leaves, every member revokes all its partitions, drains them and rejoins, and the
group is given its new assignment once every member has. So a processor says, at INFO and once
per rebalance, what it gave up (and how long its drain took: the group waits for it) and what
it was given: ``revoked orders.events[0-2,5] (4 partitions) after draining 0.4 s``,
``assigned orders.events[1,2,5] (3 partitions)``.

aiokafka says "Heartbeat failed for group X because it is rebalancing" at WARNING to each member
at every rebalance: routine, and said by those lines already. So is Faust's "exception performing
seek when flow not active IllegalStateError: No current assignment for partition ...", when a
fetch that found the flow stopped seeks a partition the rebalance had just taken away (the next
assignment seeks its own), and mode's "Timer ... is overlapping" for the binding's own
housekeeping timers, made late by a drain. So are, in a processor's first minute, aiokafka's
ERROR "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError" and
WARNING "Marking the coordinator dead": a new broker creates its offsets topic as the first
group joins (a newcomer's first run showed an ERROR); later they say something is wrong, and
stay as they are. :class:`RoutineRebalanceLines` makes each the INFO line it is, which
aiokafka's, Faust's and mode's loggers (at WARNING unless the program logs at DEBUG, see
:mod:`pipeline.logs.setup`) then keep out of the log.

The drain's time limit: Faust runs the whole revocation, our drain in it, inside mode's flight
recorder, which logs "Warning: Task timed out!" and "Please make sure it's hanging before
restart." with a stack trace once the revocation has run 0.95 x the session timeout
(:data:`~pipeline.processing.faust.internals.REVOCATION_RECORDER_SHARE`). With the default
settings (both 10 s) a drain that used its whole ``processing.drain_timeout_s`` made Faust say
that half a second before the processor's own clear warning, and an operator told to restart a
"hanging" worker restarts a healthy one. The recorder is not silenced: it stays for a real hang
of the revocation (a commit Kafka never answers). Instead the drain in a revocation ends by
:data:`DRAIN_SHARE` x the session timeout (:func:`revocation_drain_timeout`), which leaves a
tenth of it for the commit that follows before the recorder would speak.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable

from pipeline.plurals import counted
from pipeline.processing.faust.internals import REVOCATION_RECORDER_SHARE
from pipeline.processing.faust.session_expiry import GROUP_COORDINATOR_LOGGER

__all__ = [
    "DRAIN_SHARE",
    "RoutineRebalanceLines",
    "install_routine_rebalance_lines",
    "partitions_text",
    "revocation_drain_timeout",
]

#: A drain inside a revocation ends by this share of the session timeout: before Faust's flight
#: recorder (at REVOCATION_RECORDER_SHARE), leaving a tenth of the timeout for the commit.
DRAIN_SHARE = REVOCATION_RECORDER_SHARE - 0.1

#: What makes each routine WARNING, by the logger that says it: every fragment in its message.
HEARTBEAT_REBALANCING = ("Heartbeat failed for group", "because it is rebalancing")
SEEK_OF_A_PARTITION_TAKEN_AWAY = (
    "exception performing seek when flow not active",
    "No current assignment for partition",
)
#: The logger of Faust's consumer (its aiokafka driver), which says the seek line.
FAUST_CONSUMER_LOGGER = "faust.transport.drivers.aiokafka"
#: mode's timers say "Timer ... is overlapping" when a run took longer than its interval: for
#: the binding's own housekeeping (the lag refreshed every second, the summary line), a run
#: made late by a rebalance's drain or a busy loop, which ``pipeline_consumer_lag_age_seconds``
#: and the summary line's "as of ... ago" already tell.
TIMERS_LOGGER = "mode.timers"
BINDING_TIMER_OVERLAPPING = ("Timer pipeline.processing.faust.binding.", "is overlapping")
#: aiokafka's lines while a new broker's group coordinator is not there yet (ERROR, WARNING).
COORDINATOR_NOT_AVAILABLE = ("Group Coordinator Request failed", "GroupCoordinatorNotAvailable")
COORDINATOR_DEAD = ("Marking the coordinator dead",)
#: How long after the start those are routine.
STARTING_S = 60.0


def revocation_drain_timeout(drain_timeout_s: float, session_timeout_s: float) -> float:
    """How long a drain inside a revocation may take: ``processing.drain_timeout_s``, but at
    most :data:`DRAIN_SHARE` x ``processing.session_timeout_s`` (see the module docstring)."""
    return min(drain_timeout_s, DRAIN_SHARE * session_timeout_s)


def partitions_text(partitions: Iterable[tuple[str, int]]) -> str:
    """``orders.events[0-2,5] logs[1] (5 partitions)``: topics in name order, runs of three or
    more partitions as ranges; ``no partitions`` for none."""
    by_topic: dict[str, set[int]] = defaultdict(set)
    for topic, partition in partitions:
        by_topic[topic].add(partition)
    if not by_topic:
        return "no partitions"
    topics = " ".join(f"{topic}[{_runs(sorted(by_topic[topic]))}]" for topic in sorted(by_topic))
    total = sum(len(numbers) for numbers in by_topic.values())
    return f"{topics} ({counted(total, 'partition')})"


def _runs(numbers: list[int]) -> str:
    parts: list[str] = []
    start = 0
    for index in range(1, len(numbers) + 1):
        if index == len(numbers) or numbers[index] != numbers[index - 1] + 1:
            run = numbers[start:index]
            if len(run) >= 3:
                parts.append(f"{run[0]}-{run[-1]}")
            else:
                parts.extend(str(number) for number in run)
            start = index
    return ",".join(parts)


class RoutineRebalanceLines(logging.Filter):
    """Makes a routine rebalance line at ``level`` (WARNING by default; one whose message holds
    every one of ``fragments``: aiokafka's heartbeat line by default) an INFO line, kept only
    where its logger shows INFO, for ever or for ``within_s`` seconds from now; passes the rest
    as is."""

    def __init__(
        self,
        fragments: tuple[str, ...] = HEARTBEAT_REBALANCING,
        *,
        level: int = logging.WARNING,
        within_s: float | None = None,
    ) -> None:
        super().__init__()
        self.fragments = fragments
        self.level = level
        self._until = None if within_s is None else time.monotonic() + within_s

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != self.level:
            return True
        if self._until is not None and time.monotonic() > self._until:
            return True
        message = record.getMessage()
        if not all(fragment in message for fragment in self.fragments):
            return True
        record.levelno = logging.INFO
        record.levelname = logging.getLevelName(logging.INFO)
        # The logger let it through as a WARNING; as an INFO it goes only where INFO would.
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


def install_routine_rebalance_lines() -> None:
    """Add :class:`RoutineRebalanceLines` to aiokafka's group coordinator logger (its routine
    lines, and those of a new broker's first minute), to Faust's consumer logger and to mode's
    timers (once each)."""
    for name, line in (
        (GROUP_COORDINATOR_LOGGER, RoutineRebalanceLines(HEARTBEAT_REBALANCING)),
        (FAUST_CONSUMER_LOGGER, RoutineRebalanceLines(SEEK_OF_A_PARTITION_TAKEN_AWAY)),
        (TIMERS_LOGGER, RoutineRebalanceLines(BINDING_TIMER_OVERLAPPING)),
        (
            GROUP_COORDINATOR_LOGGER,
            RoutineRebalanceLines(
                COORDINATOR_NOT_AVAILABLE, level=logging.ERROR, within_s=STARTING_S
            ),
        ),
        (GROUP_COORDINATOR_LOGGER, RoutineRebalanceLines(COORDINATOR_DEAD, within_s=STARTING_S)),
    ):
        logger = logging.getLogger(name)
        if not any(
            isinstance(known, RoutineRebalanceLines) and known.fragments == line.fragments
            for known in logger.filters
        ):
            logger.addFilter(line)
