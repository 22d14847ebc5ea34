"""Group commit: requests that arrive while a batch is being written go together in the next.

The shared Idempotency-Key store writes one statement per batch of claims (and one per batch of
answers) instead of one per request, so its cost per request falls as load rises, and a quiet
gateway still writes each request at once (a batch of one):

1. :meth:`GroupCommit.submit` queues an item and waits for its result;
2. one flusher task at a time takes up to ``max_size`` queued items (an item whose ``unique``
   key is already in the batch waits for the next one: one statement must not touch a row
   twice) and awaits ``run(batch)``, the results in the batch's order;
3. meanwhile new items queue; when the batch is done, the flusher takes the next, until none is
   left. A failed batch fails each of its items with the same error.

asyncio only, no I/O of its own (``run`` does it). Hand-written: asyncio has no batching
primitive, and aiobatcher-like libraries add timers (a fixed wait per batch) that we do not want.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

I = TypeVar("I")  # noqa: E741 - the item, as R is the result
R = TypeVar("R")


class GroupCommit(Generic[I, R]):
    """Batches of items for ``run``, one batch at a time (steps 1 to 3)."""

    def __init__(
        self,
        run: Callable[[list[I]], Awaitable[list[R]]],
        *,
        max_size: int = 256,
        unique: Callable[[I], Hashable] | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size!r}")
        self._run = run
        self._max_size = max_size
        self._unique = unique
        self._queued: list[tuple[I, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def wait_idle(self) -> None:
        """Return once nothing is queued or being written."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    def _next_batch(self) -> list[tuple[I, asyncio.Future[R]]]:
        batch: list[tuple[I, asyncio.Future[R]]] = []
        later: list[tuple[I, asyncio.Future[R]]] = []
        seen: set[Hashable] = set()
        for entry in self._queued:
            item, future = entry
            if future.done():  # its waiter was cancelled before the batch: skip it
                continue
            key = None if self._unique is None else self._unique(item)
            if len(batch) >= self._max_size or (key is not None and key in seen):
                later.append(entry)
                continue
            seen.add(key)
            batch.append(entry)
        self._queued = later
        return batch

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    results = await self._run([item for item, _ in batch])
                except Exception as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._flusher = None
