"""Which offset of a partition may be committed, when its events finish out of order.

Events of different keys run concurrently, so they finish in any order; Kafka keeps one position
per partition, and everything below a committed position is never delivered again. The position
to commit is therefore one past the highest *done* offset ``h`` such that every started offset
up to ``h`` is done: a crash may repeat work that finished above it, but never skips any.

Order of operations, per partition (the runtime does the I/O, this module only keeps count):

1. ``started(offset)`` when an event is dispatched, before any of its work begins. Offsets come
   in increasing order; gaps are fine (compacted and transactional topics skip offsets).
2. ``done(offset)`` once its effect (or its dead letter) is durable, in any order.
3. ``committable()``: the position to commit, or ``None`` when nothing new is committable.
4. commit that position to Kafka; once the broker accepted it, ``mark_committed(position)``.
5. on revocation, once in-flight work finished (or its time ran out): steps 3-4 one last time,
   then ``reset()`` (or :meth:`PartitionOffsets.revoke`). Unfinished work is never committed.

Memory is bounded by the window from the oldest offset still in flight to the newest started
one; offsets below it are forgotten as soon as they are done. An event that stays in flight
(a stalled key) makes the window grow: pause the partition when :attr:`OffsetTracker.window`
gets too large.

``done()`` accepts exactly the offsets in flight: an offset never started, or reported done a
second time, raises :class:`ValueError`. A duplicate completion is a bug in the caller, and
ignoring it could hide a completion that is missing elsewhere.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["CommitPosition", "OffsetTracker", "PartitionOffsets"]


class OffsetTracker:
    """Started and done offsets of one topic-partition, and the position safe to commit."""

    def __init__(self, committed: int | None = None) -> None:
        """``committed``: the group's position when the partition was assigned, if known.

        Positions at or below it are never reported as committable again.
        """
        if committed is not None:
            _check_offset(committed, "committed position")
        self._window: deque[int] = deque()  # started, not yet below the safe position; ascending
        self._in_flight: set[int] = set()  # started, not done (a subset of the window)
        self._last_started: int | None = None
        self._safe: int | None = None  # everything started below it is done
        self._committed = committed

    @property
    def in_flight(self) -> int:
        """How many started offsets are not done yet."""
        return len(self._in_flight)

    @property
    def window(self) -> int:
        """How many offsets are held: from the oldest in flight to the newest started."""
        return len(self._window)

    @property
    def committed(self) -> int | None:
        """The last position marked committed (or given when assigned); ``None`` if none."""
        return self._committed

    def started(self, offset: int) -> None:
        """Count ``offset`` as dispatched; it must be above every offset started before."""
        _check_offset(offset, "offset")
        if self._last_started is not None and offset <= self._last_started:
            raise ValueError(
                f"offset {offset} started after offset {self._last_started}: offsets of a "
                "partition must be started in increasing order"
            )
        self._last_started = offset
        self._window.append(offset)
        self._in_flight.add(offset)

    def done(self, offset: int) -> None:
        """Count ``offset`` as finished; then move the safe position past every done offset.

        :class:`ValueError` unless ``offset`` is in flight (never started, or already done).
        """
        if offset not in self._in_flight:
            raise ValueError(
                f"offset {offset} is not in flight: it was never started on this partition, "
                "or it is already done"
            )
        self._in_flight.remove(offset)
        while self._window and self._window[0] not in self._in_flight:
            self._safe = self._window.popleft() + 1

    def committable(self) -> int | None:
        """The Kafka position to commit now, or ``None`` when it would not move forward."""
        if self._safe is None or (self._committed is not None and self._safe <= self._committed):
            return None
        return self._safe

    def mark_committed(self, position: int) -> None:
        """Record that the broker accepted ``position``.

        A position at or below the one already recorded is a late acknowledgement and is
        ignored; a position beyond what is done raises :class:`ValueError`.
        """
        if self._committed is not None and position <= self._committed:
            return
        if self._safe is None or position > self._safe:
            raise ValueError(
                f"position {position} is beyond what is done (safe up to {self._safe}): "
                "commit only what committable() returned"
            )
        self._committed = position

    def reset(self) -> None:
        """Forget everything, for a revoked partition (its next owner starts from the commit)."""
        self._window.clear()
        self._in_flight.clear()
        self._last_started = None
        self._safe = None
        self._committed = None


def _check_offset(offset: int, what: str) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"{what} must be an int, got {type(offset).__name__}")
    if offset < 0:
        raise ValueError(f"{what} must be >= 0, got {offset}")


class CommitPosition(NamedTuple):
    """One entry of a commit: the next offset the group should read from this partition."""

    topic: str
    partition: int
    position: int


class PartitionOffsets:
    """One :class:`OffsetTracker` per assigned topic-partition, and the commit across them."""

    def __init__(self) -> None:
        self._trackers: dict[tuple[str, int], OffsetTracker] = {}

    @property
    def in_flight(self) -> int:
        """How many started offsets are not done yet, over all partitions."""
        return sum(tracker.in_flight for tracker in self._trackers.values())

    def assign(self, topic: str, partition: int, committed: int | None = None) -> OffsetTracker:
        """Start tracking a newly assigned partition, from the group's position if known."""
        tracker = OffsetTracker(committed)
        self._trackers[(topic, partition)] = tracker
        return tracker

    def tracker(self, topic: str, partition: int) -> OffsetTracker:
        """The tracker of a partition; created (with no known position) on first use."""
        tracker = self._trackers.get((topic, partition))
        return tracker if tracker is not None else self.assign(topic, partition)

    def started(self, topic: str, partition: int, offset: int) -> None:
        """:meth:`OffsetTracker.started` on that partition's tracker."""
        self.tracker(topic, partition).started(offset)

    def done(self, topic: str, partition: int, offset: int) -> None:
        """:meth:`OffsetTracker.done`; :class:`ValueError` for a partition not tracked."""
        tracker = self._trackers.get((topic, partition))
        if tracker is None:
            raise ValueError(
                f"offset {offset} of {topic}[{partition}] is not in flight: the partition is "
                "not tracked (never started, or revoked)"
            )
        tracker.done(offset)

    def commit_plan(
        self, partitions: Iterable[tuple[str, int]] | None = None
    ) -> list[CommitPosition]:
        """What to commit now: every partition (or only ``partitions``) that can move forward.

        Sorted by topic and partition; empty when there is nothing to commit.
        """
        wanted = self._trackers.keys() if partitions is None else set(partitions)
        plan = []
        for topic, partition in sorted(wanted):
            tracker = self._trackers.get((topic, partition))
            position = tracker.committable() if tracker is not None else None
            if position is not None:
                plan.append(CommitPosition(topic, partition, position))
        return plan

    def mark_committed(self, positions: Iterable[CommitPosition]) -> None:
        """Record the positions the broker accepted; those of revoked partitions are ignored."""
        for topic, partition, position in positions:
            tracker = self._trackers.get((topic, partition))
            if tracker is not None:
                tracker.mark_committed(position)

    def revoke(self, topic: str, partition: int) -> None:
        """Stop tracking a revoked partition (commit its plan first). Unknown ones are fine."""
        tracker = self._trackers.pop((topic, partition), None)
        if tracker is not None:
            tracker.reset()
