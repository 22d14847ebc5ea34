"""Virtual time for the broker-free test driver and harness.

A :class:`VirtualClock` moves only when told (:meth:`VirtualClock.advance`); pass it where a
component takes a clock (the saga orchestrator's ``clock``), and a 30-minute timeout is tested in
milliseconds.

The driver's retry backoffs wait on the clock too (:class:`ClockTimers`), and the driver moves the
clock itself when nothing else can happen: once every record in flight is waiting for a backoff,
the clock jumps to the earliest one, which then runs. So a run never sleeps in real time, the
backoffs still pass in their order, and afterwards the clock shows the time they took, as on a
real processor (a backoff that ends after a saga's deadline lets that deadline fire).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from datetime import UTC, datetime, timedelta

__all__ = ["ClockTimers", "VirtualClock"]

#: Where a virtual clock starts unless told: a fixed moment, so runs are repeatable.
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


class VirtualClock:
    """A clock that moves only when told: pass ``clock`` where a component takes one.

    Thread-safe: a handler running in a worker thread may advance it (a slow courier that
    "takes" 31 s).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or DEFAULT_START
        self._lock = threading.Lock()

    @property
    def now(self) -> datetime:
        return self._now

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move the clock ``seconds`` forward; returns the new time."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back: advance({seconds})")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def advance_to(self, moment: datetime) -> datetime:
        """Move the clock to ``moment`` when that is later than now; returns the new time.

        Only the clock moves: nothing runs. A ``PipelineHarness``'s clock is moved with
        ``harness.advance`` or ``harness.advance_to``, which fire each saga deadline on the way
        at its own moment (the harness refuses to run after its clock was moved by hand past
        one)."""
        with self._lock:
            self._now = max(self._now, moment)
            return self._now

    @property
    def epoch_ms(self) -> int:
        """Now in milliseconds since the epoch (a Kafka timestamp)."""
        return int(self._now.timestamp() * 1000)


class ClockTimers:
    """The waits of one driver run on a :class:`VirtualClock` (one asyncio loop).

    :meth:`sleep` is the engine's ``sleep``: it returns once the clock reached its end.
    :meth:`release_due` wakes the sleepers whose end has come (the clock may have been moved by
    a test or a handler); :meth:`jump` moves the clock to the earliest end and wakes it.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._heap: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._added: asyncio.Event | None = None

    @property
    def sleeping(self) -> int:
        """How many sleepers wait for the clock."""
        return len(self._heap)

    @property
    def added(self) -> asyncio.Event:
        """Set whenever a sleeper starts waiting (the loop that pumps the clock waits on it)."""
        if self._added is None:
            self._added = asyncio.Event()
        return self._added

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        end = self.clock.now + timedelta(seconds=seconds)
        heapq.heappush(self._heap, (end, next(self._order), future))
        self.added.set()
        await future

    def release_due(self) -> int:
        """Wake every sleeper whose end has come; returns how many."""
        woken = 0
        while self._heap and self._heap[0][0] <= self.clock.now:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                future.set_result(None)
            woken += 1
        return woken

    def jump(self) -> int:
        """Move the clock to the earliest sleeper's end and wake the sleepers due then."""
        if not self._heap:
            return 0
        self.clock.advance_to(self._heap[0][0])
        return self.release_due()
