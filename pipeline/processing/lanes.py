"""Key-ordered dispatch: which submitted work may run now.

Work of one key runs strictly one after another, in offset order; work of different keys runs
concurrently, at most ``max_in_flight`` at once. :class:`KeyLanes` only decides; it runs nothing
and has no clock, so the runtime (threads, asyncio, the broker-free driver) stays in charge.

A *lane* is ``(topic, partition, key)``: offsets order events within one partition only, and a
key always lands on the same partition of a topic. Work with no key (``None``) is, by default,
ordered per partition in a lane of its own (``unkeyed="per_partition"``): the producer stated no
order, but nothing is reordered unless asked; ``unkeyed="unordered"`` lets it run freely.

Order of operations (the runtime, with a :class:`~pipeline.processing.offsets.PartitionOffsets`):

1. for each polled record, in offset order: ``offsets.started(...)``, then ``submit(work)``;
   start every work returned.
2. once a work's effect is durable: ``offsets.done(...)``, then ``complete(work)``; start every
   work returned.
3. once a work is dead-lettered (its retries spent): ``offsets.done(...)``, then
   ``fail(work, policy)``; start every work returned.
4. on revocation or shutdown: ``drain(partitions)`` (nothing of those starts any more) returns
   what is still running; wait for it, bounded by a timeout; commit what finished; then
   ``forget(partitions)`` and start every work returned (the room it freed).

Waiting work holds its partition's commit position back (it is started but not done), so a
crash repeats it rather than skipping it. Backpressure is the runtime's: pause fetching when
:attr:`KeyLanes.pending` grows too large.

Failure policy (:meth:`KeyLanes.fail`): ``"stall_key"`` (the default, as in Confluent's
Parallel Consumer) keeps the later work of that lane waiting until :meth:`KeyLanes.release`, so
a key's events are never applied past a gap; ``"skip_key_continue"`` lets them run. The stall
is held in memory only: after a restart or rebalance the waiting events are delivered again
(they were never committed) and run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, NamedTuple, TypeVar, get_args

__all__ = ["FailurePolicy", "KeyLanes", "Lane", "Unkeyed", "Work"]

FailurePolicy = Literal["stall_key", "skip_key_continue"]
Unkeyed = Literal["per_partition", "unordered"]
Key = str | bytes | None

P = TypeVar("P")


class Lane(NamedTuple):
    """Where order holds: the work of one key in one topic-partition."""

    topic: str
    partition: int
    key: Key


@dataclass(frozen=True, slots=True)
class Work(Generic[P]):
    """One event to handle. Identified by topic, partition, offset and key (not the payload)."""

    topic: str
    partition: int
    offset: int
    key: Key
    payload: P = field(compare=False, repr=False)
    # Hashed a dozen times per event (the lanes' and the engine's sets and dicts): once here,
    # not from four fields each time. Equality still compares the four fields.
    _hash: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        identity = (self.topic, self.partition, self.offset, self.key)
        object.__setattr__(self, "_hash", hash(identity))

    def __hash__(self) -> int:
        return self._hash

    @property
    def lane(self) -> Lane:
        return Lane(self.topic, self.partition, self.key)


def _lane_key(work: Work[P]) -> tuple[str, int, Key]:
    """``work.lane`` as a plain tuple: equal to the :class:`Lane` and hashed alike, so it finds
    the same entries, at a fraction of the cost of building the named tuple (twice per event)."""
    return (work.topic, work.partition, work.key)


def _sorted(works: Iterable[Work[P]]) -> list[Work[P]]:
    return sorted(works, key=lambda work: (work.topic, work.partition, work.offset))


class KeyLanes(Generic[P]):
    """Decides what runs: one at a time per lane, up to ``max_in_flight`` over all lanes.

    Every method that can free or add capacity returns the work that became runnable, oldest
    first; the caller starts exactly those. Misuse (a work not running, offsets going back,
    submitting to a draining partition) raises at once instead of being absorbed.
    """

    def __init__(
        self,
        max_in_flight: int,
        *,
        unkeyed: Unkeyed = "per_partition",
        note_waiting: bool = False,
    ) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise TypeError(f"max_in_flight must be an int, got {type(max_in_flight).__name__}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if unkeyed not in get_args(Unkeyed):
            raise ValueError(f"unkeyed must be one of {get_args(Unkeyed)}, got {unkeyed!r}")
        self._max_in_flight = max_in_flight
        self._unkeyed = unkeyed
        # Submitted, unfinished work by lane (as a plain tuple, see _lane_key); head first.
        self._lanes: dict[tuple[str, int, Key], deque[Work[P]]] = {}
        self._ready: deque[Work[P]] = deque()  # may start once there is room; oldest first
        self._running: set[Work[P]] = set()
        # Set aside: their handler is done, their commit is not; their lanes stay held, but
        # they take no room of max_in_flight.
        self._aside: set[Work[P]] = set()
        # Set aside, and waiting for a place back to run their handler again (a retry after
        # their commit failed); served before any other work, oldest first.
        self._reclaiming: deque[Work[P]] = deque()
        # Given their place back by _fill since take_reclaimed() was last asked.
        self._reclaimed: list[Work[P]] = []
        self._stalled: set[Lane] = set()
        self._last_offset: dict[tuple[str, int], int] = {}
        self._draining: set[tuple[str, int]] = set()
        self._closed = False  # drained entirely: nothing starts any more
        self._unfinished = 0
        self._placed = 0  # works given a place, ever (see placed)
        # note_waiting: the works made ready since take_waiting() was last asked.
        self._note_waiting = note_waiting
        self._became_ready: list[Work[P]] = []

    @property
    def in_flight(self) -> int:
        """How many works are running (started, neither completed nor failed), those set
        aside included."""
        return len(self._running) + len(self._aside)

    @property
    def placed(self) -> int:
        """How many works were given a place so far (a count that moves while handlers start;
        a work given its place back is not counted again)."""
        return self._placed

    @property
    def pending(self) -> int:
        """How many submitted works wait: behind their lane, for room, or behind a stall."""
        return self._unfinished - len(self._running) - len(self._aside)

    @property
    def stalled(self) -> frozenset[Lane]:
        """Lanes held by a failure with ``"stall_key"``, until :meth:`release`."""
        return frozenset(self._stalled)

    def submit(self, work: Work[P]) -> list[Work[P]]:
        """Accept the next work of a partition; return what may start now.

        1. refuse it if its partition is draining, or its offset is not above the last one;
        2. queue it in its lane (unordered keyless work goes straight to the ready queue);
           the head of a lane that is not stalled becomes ready;
        3. start ready work, oldest first, while there is room.
        """
        partition = (work.topic, work.partition)
        if self._closed or partition in self._draining:
            raise RuntimeError(f"{work.topic}[{work.partition}] is draining: nothing new starts")
        last = self._last_offset.get(partition)
        if last is not None and work.offset <= last:
            raise ValueError(
                f"offset {work.offset} of {work.topic}[{work.partition}] submitted after offset "
                f"{last}: work of a partition must be submitted in increasing offset order"
            )
        self._last_offset[partition] = work.offset
        self._unfinished += 1
        if not self._ordered(work):
            self._make_ready(work)
        else:
            lane = _lane_key(work)
            queue = self._lanes.get(lane)
            if queue is None:
                self._lanes[lane] = deque((work,))
                if not self._stalled or lane not in self._stalled:
                    self._make_ready(work)
            else:
                queue.append(work)
        return self._fill()

    def complete(self, work: Work[P]) -> list[Work[P]]:
        """Finish a running work; return what may start now (its lane's next, or others)."""
        self._finish(work)
        return self._fill()

    def set_aside(self, work: Work[P]) -> list[Work[P]]:
        """A running work whose handler finished and whose commit has not: it stops taking room
        of ``max_in_flight`` (other lanes' work may start in its place) but still holds its
        lane until :meth:`complete` or :meth:`fail`; return what may start now."""
        if work not in self._running:
            raise ValueError(f"{work} is not running")
        self._running.remove(work)
        self._aside.add(work)
        return self._fill()

    def is_aside(self, work: Work[P]) -> bool:
        """Whether ``work`` is set aside (waiting for its commit, or for a place back)."""
        return work in self._aside

    def reclaim(self, work: Work[P]) -> bool:
        """A work set aside must run its handler again (its commit failed: a retry): it takes a
        place of ``max_in_flight`` back. ``True`` when it has one now; else it is first in line
        for the next place that frees, ahead of any other work, and :meth:`take_reclaimed`
        names it once it got one."""
        if work not in self._aside:
            raise ValueError(f"{work} is not set aside")
        if work in self._reclaiming:
            return False
        if len(self._running) < self._max_in_flight and not self._reclaiming:
            self._aside.remove(work)
            self._running.add(work)
            return True
        self._reclaiming.append(work)
        return False

    def take_reclaimed(self) -> list[Work[P]]:
        """The works :meth:`reclaim` put in line that have their place back since last asked."""
        taken, self._reclaimed = self._reclaimed, []
        return taken

    def take_waiting(self) -> list[Work[P]]:
        """The works that became ready since this was last asked and still wait for a place
        of ``max_in_flight``, oldest first (made with ``note_waiting=True``; else none): what
        a runtime may prepare ahead, each being its lane's head (its lane's work before it is
        finished). Unordered work is never named: nothing before it need be finished."""
        noted = self._became_ready
        if not noted:  # most calls: nothing became ready since
            return []
        self._became_ready = []
        running, aside = self._running, self._aside
        return [work for work in noted if work not in running and work not in aside]

    def fail(self, work: Work[P], policy: FailurePolicy = "stall_key") -> list[Work[P]]:
        """Finish a running work that failed for good (dead-lettered); return what may start.

        ``"stall_key"``: the rest of its lane waits until :meth:`release`. ``"skip_key_continue"``:
        the rest of its lane runs as if it had completed. Unordered keyless work has no lane, so
        the policy makes no difference to it.
        """
        if policy not in get_args(FailurePolicy):
            raise ValueError(f"policy must be one of {get_args(FailurePolicy)}, got {policy!r}")
        if work not in self._running and work not in self._aside:
            raise ValueError(f"{work} is not running")
        if policy == "stall_key" and self._ordered(work):
            self._stalled.add(work.lane)
        self._finish(work)
        return self._fill()

    def release(self, lane: Lane) -> list[Work[P]]:
        """Let a stalled lane go on; return what may start now."""
        if lane not in self._stalled:
            raise ValueError(f"{lane} is not stalled")
        self._stalled.remove(lane)
        queue = self._lanes.get(lane)
        if queue:
            self._make_ready(queue[0])
        return self._fill()

    def drain(self, partitions: Collection[tuple[str, int]] | None = None) -> list[Work[P]]:
        """Start nothing more on ``partitions`` (all of them when ``None``, for shutdown).

        Returns the work of those partitions still running: let it finish (bounded by a
        timeout) before committing. Their waiting work stays queued until :meth:`forget`.
        """
        if partitions is None:
            self._closed = True
            return _sorted(self._running | self._aside)
        self._draining.update(partitions)
        wanted = set(partitions)
        return _sorted(w for w in self._running | self._aside if (w.topic, w.partition) in wanted)

    def forget(self, partitions: Collection[tuple[str, int]]) -> list[Work[P]]:
        """Drop all work of revoked ``partitions`` and their stalls; return what may start now.

        Running work of those partitions is dropped too (its time ran out), which frees its
        room for the other partitions; completing it later raises :class:`ValueError`. The
        partitions may then be submitted to again, from any offset.
        """
        wanted = set(partitions)

        def keep(work: Work[P]) -> bool:
            return (work.topic, work.partition) not in wanted

        dropped = {w for w in self._running | self._aside if not keep(w)}
        dropped.update(w for w in self._ready if not keep(w))
        for lane in [lane for lane in self._lanes if (lane[0], lane[1]) in wanted]:
            dropped.update(self._lanes.pop(lane))
        self._running = {w for w in self._running if keep(w)}
        self._aside = {w for w in self._aside if keep(w)}
        self._reclaiming = deque(w for w in self._reclaiming if keep(w))
        self._reclaimed = [w for w in self._reclaimed if keep(w)]
        self._ready = deque(w for w in self._ready if keep(w))
        self._became_ready = [w for w in self._became_ready if keep(w)]
        self._stalled = {
            lane for lane in self._stalled if (lane.topic, lane.partition) not in wanted
        }
        for partition in wanted:
            self._last_offset.pop(partition, None)
            self._draining.discard(partition)
        self._unfinished -= len(dropped)
        return self._fill()

    def _ordered(self, work: Work[P]) -> bool:
        return work.key is not None or self._unkeyed == "per_partition"

    def _finish(self, work: Work[P]) -> None:
        """Take a running work out; the next of its lane becomes ready unless the lane stalled."""
        if work in self._running:
            self._running.remove(work)
        elif work in self._aside:
            self._aside.remove(work)
            if work in self._reclaiming:
                self._reclaiming.remove(work)
        else:
            raise ValueError(f"{work} is not running")
        self._unfinished -= 1
        if not self._ordered(work):
            return
        lane = _lane_key(work)
        queue = self._lanes[lane]
        queue.popleft()  # only a lane's head ever runs
        if not queue:
            del self._lanes[lane]
        elif not self._stalled or lane not in self._stalled:
            self._make_ready(queue[0])

    def _make_ready(self, work: Work[P]) -> None:
        self._ready.append(work)
        # Only a lane's head is noted: its lane's work before it is finished. Unordered work
        # is ready as soon as it is submitted, before the earlier work of its key ran.
        if self._note_waiting and self._ordered(work):
            self._became_ready.append(work)

    def _fill(self) -> list[Work[P]]:
        """Start ready work, oldest first, while there is room; skip draining partitions. Works
        set aside that wait for a place back get it first (even while draining: they are not
        new work, and a drain waits for them)."""
        started: list[Work[P]] = []
        while self._reclaiming and len(self._running) < self._max_in_flight:
            work = self._reclaiming.popleft()
            self._aside.remove(work)
            self._running.add(work)
            self._reclaimed.append(work)
        if self._closed:
            return started
        ready, running = self._ready, self._running
        if not self._draining:  # the usual case: nothing to skip
            while ready and len(running) < self._max_in_flight:
                work = ready.popleft()
                running.add(work)
                started.append(work)
            self._placed += len(started)
            return started
        skipped: deque[Work[P]] = deque()
        while self._ready and len(self._running) < self._max_in_flight:
            work = self._ready.popleft()
            if (work.topic, work.partition) in self._draining:
                skipped.append(work)
                continue
            self._running.add(work)
            started.append(work)
        skipped.extend(self._ready)
        self._ready = skipped
        self._placed += len(started)
        return started
