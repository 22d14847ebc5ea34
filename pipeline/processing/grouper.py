"""Groups of items for one piece of work each: :class:`Grouper`.

The items submitted in one turn of the event loop form a group, and those arriving while every
slot is busy (the group before them still in the database) wait for the first slot to come free
and go together, so a group is as large as the load makes it and an item waits at most one
group. That holds where the work waits (a worker thread, a network round trip). Where it does
not (SQLite on the event loop's own connection, :mod:`~pipeline.processing.sqlite_loop_inbox`),
a group runs inside one turn and nothing arrives meanwhile, so groups stay as small as the
events handled in one turn (``max_in_flight`` at most): a :class:`Linger` lets a group wait a
few turns for the items that are on their way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

__all__ = ["Grouper", "Linger"]

I = TypeVar("I")  # noqa: E741 (an item)
R = TypeVar("R")  # its result

Runner = Callable[[Callable[[], list[R]]], Awaitable[list[R]]]


async def _never_run(_work: Callable[[], list[Any]]) -> list[Any]:
    raise AssertionError("a grouper made by Grouper.awaiting runs its work on the loop")


@dataclass(frozen=True)
class Linger:
    """When a group waits for more items before it starts: while ``more_coming()`` says items
    are on their way (asked once a turn), it has fewer than ``size`` items and its first item
    waited less than ``most_s`` seconds."""

    more_coming: Callable[[], bool]
    size: int
    most_s: float

    @classmethod
    def while_counting(cls, count: Callable[[], int], *, size: int, most_s: float) -> Linger:
        """Items are on their way while ``count()`` (of what makes them, such as the handlers
        started) moved since it was last asked."""
        return cls(_Moved(count), size, most_s)


class _Moved:
    """Called: whether ``count()`` changed since the last call."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count
        self._last = 0

    def __call__(self) -> bool:
        now = self._count()
        moved, self._last = now != self._last, now
        return moved


class Grouper(Generic[I, R]):
    """Runs ``work(items)`` for groups of items through ``run`` (a worker thread); each
    :meth:`submit` gets its own item's result or the group's error.

    At most ``concurrency`` groups run at once (one by default), each of at most ``max_size``
    items (no limit by default; either may be a function, asked each time): the items submitted in
    one turn of the event loop form a group, and items arriving while every slot is busy wait
    until the first slot to come free takes them as its next group. With a ``linger``, a group
    whose slot is free may wait a few turns more for the items on their way.
    """

    def __init__(
        self,
        work: Callable[[list[I]], list[R]],
        run: Runner[R],
        *,
        concurrency: int | Callable[[], int] = 1,
        max_size: int | Callable[[], int] | None = None,
        linger: Linger | None = None,
    ) -> None:
        if (isinstance(concurrency, int) and concurrency < 1) or (
            isinstance(max_size, int) and max_size < 1
        ):
            raise ValueError(f"concurrency and max_size must be >= 1: {concurrency}, {max_size}")
        self._call: Callable[[list[I]], Awaitable[list[R]]] = lambda items: run(
            partial(work, items)
        )
        self._concurrency = concurrency
        self._max_size = max_size
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._running = 0
        self._scheduled = False
        self._groups: set[asyncio.Future[None]] = set()  # running (a reference keeps each)
        self._linger = linger
        self._waiting_since = 0.0  # the loop's time when the first waiting item came

    @classmethod
    def awaiting(
        cls,
        work: Callable[[list[I]], Awaitable[list[R]]],
        *,
        concurrency: int | Callable[[], int] = 1,
        max_size: int | Callable[[], int] | None = None,
        linger: Linger | None = None,
    ) -> Grouper[I, R]:
        """A grouper whose ``work`` is a coroutine function, awaited on the loop itself."""
        grouper: Grouper[I, R] = cls(
            lambda items: [], _never_run, concurrency=concurrency, max_size=max_size, linger=linger
        )
        grouper._call = work
        return grouper

    async def submit(self, item: I) -> R:
        return await self.submit_nowait(item)

    def submit_nowait(self, item: I) -> asyncio.Future[R]:
        """:meth:`submit` without a coroutine: the future of ``item``'s result (for a caller
        that awaits it later, without a task of its own for the waiting)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if self._linger is not None and not self._waiting:
            self._waiting_since = loop.time()
        self._waiting.append((item, future))
        # (Nothing running: a slot is free whatever the concurrency, not asked for.)
        if not self._scheduled and (not self._running or self._running < self._slots()):
            # On the next turn of the loop: the items submitted in this turn form one group.
            self._scheduled = True
            loop.call_soon(self._scheduled_start)
        return future

    def _slots(self) -> int:
        slots = self._concurrency() if callable(self._concurrency) else self._concurrency
        return max(1, slots)

    def _scheduled_start(self) -> None:
        self._scheduled = False
        self._start_groups()

    def _start_groups(self) -> None:
        if self._lingers():
            if not self._scheduled:  # the next turn looks again
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._scheduled_start)
            return
        while self._waiting and self._running < self._slots():
            most = self._max_size() if callable(self._max_size) else self._max_size
            size = max(1, most) if most is not None else len(self._waiting)
            group, self._waiting = self._waiting[:size], self._waiting[size:]
            self._running += 1
            task = asyncio.ensure_future(self._run_group(group))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    def _lingers(self) -> bool:
        """Whether the waiting items wait a turn more for others (the :class:`Linger`'s
        conditions)."""
        linger = self._linger
        if (
            linger is None
            or not self._waiting
            or len(self._waiting) >= linger.size
            or self._running >= self._slots()  # no group starts now anyway
        ):
            return False
        waited = asyncio.get_running_loop().time() - self._waiting_since
        return waited < linger.most_s and linger.more_coming()

    async def _run_group(self, group: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            results = await self._call([item for item, _ in group])
        except Exception as error:
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
                    # Marked as retrieved: a caller that awaits it still gets the error, and
                    # one that no longer will (its partition was revoked) leaves no "exception
                    # never retrieved" behind. (Cheaper than a done-callback on every future.)
                    future.exception()
        else:
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._running -= 1
            self._start_groups()
