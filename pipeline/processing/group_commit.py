"""Group commit for ``async`` handlers: many events' database work in one transaction.

An ``async`` handler runs on the event loop, so many run at once without a thread each; what
they need from the database is gathered and done in groups, in a worker thread:

- :func:`look_up` (before the handlers): which events the inbox has seen and which keys are
  parked, two queries for the whole group;
- :func:`commit` (after the handlers): one transaction records every event in the inbox, runs
  the writes of those that were new (their effects and outbox rows) and commits. An event the
  inbox already had is a duplicate and its writes are dropped. When the group's transaction
  fails (one event's write broke a constraint, or the database went away), each event is
  committed on its own, so one bad write fails only its own event.

:class:`Grouper` forms the groups: items arriving while a group is in the database make up the
next one, so a group is as large as the load makes it and an item waits at most one group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.processing import inbox
from pipeline.processing.attempt import AttemptResult, is_unavailable
from pipeline.processing.processor import UnitOfWork

__all__ = ["Grouper", "Seen", "commit", "look_up"]

I = TypeVar("I")  # noqa: E741 (an item)
R = TypeVar("R")  # its result

Runner = Callable[[Callable[[], list[R]]], Awaitable[list[R]]]


class Grouper(Generic[I, R]):
    """Runs ``work(items)`` for groups of items, one group at a time, through ``run`` (a
    worker thread); each :meth:`submit` gets its own item's result or the group's error."""

    def __init__(self, work: Callable[[list[I]], list[R]], run: Runner[R]) -> None:
        self._work = work
        self._run = run
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._busy = False
        self._drainer: asyncio.Future[None] | None = None

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._busy:
            self._busy = True
            self._drainer = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    results = await self._run(partial(self._work, [item for item, _ in group]))
                except Exception as error:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._busy = False


@dataclass(frozen=True)
class Seen:
    """What the inbox knows of an event before its handler runs."""

    outcome: inbox.Outcome | None  # recorded before: a duplicate (or a dead letter)
    parked: bool  # its key is parked


def look_up(
    database: Engine,
    items: Sequence[tuple[str, str, bytes | None]],
    *,
    consumer_group: str,
    park_keys: bool,
) -> list[Seen]:
    """For each ``(event id, topic, key)``: whether it was recorded, and whether it is parked."""
    with database.connect() as connection:
        outcomes = inbox.outcomes_of(
            connection, consumer_group=consumer_group, event_ids={item[0] for item in items}
        )
        keys = {(topic, key) for _, topic, key in items if key is not None}
        parked = (
            inbox.parked_among(connection, consumer_group=consumer_group, keys=keys)
            if park_keys
            else set()
        )
    return [
        Seen(outcomes.get(event_id), key is not None and (topic, key) in parked)
        for event_id, topic, key in items
    ]


def _commit_together(
    database: Engine, units: Sequence[UnitOfWork], consumer_group: str, use_inbox: bool
) -> list[AttemptResult]:
    with database.begin() as connection, Session(bind=connection) as session:
        if use_inbox:
            # In event id order: two instances committing overlapping groups during a
            # rebalance then take the rows' locks in the same order (no deadlock on PostgreSQL).
            entries = sorted(
                inbox.InboxEntry(u.event.id, u.record.topic, u.record.partition, u.record.offset)
                for u in units
            )
            new = inbox.claim_many(connection, entries, consumer_group=consumer_group)
        else:
            new = {unit.event.id for unit in units}
        outcomes = []
        for unit in units:
            event_id = unit.event.id
            if event_id in new:
                new.discard(event_id)  # the same event twice in one group: the second is a copy
                unit.apply_writes(session)
                outcomes.append(AttemptResult("processed", event_id, event=unit.event))
            else:
                outcomes.append(AttemptResult("duplicate", event_id, event=unit.event))
        session.flush()  # the writes, in this transaction (the connection's, committed here)
        return outcomes


def commit(
    database: Engine, units: Sequence[UnitOfWork], *, consumer_group: str, use_inbox: bool
) -> list[AttemptResult]:
    """Commit the handled events of ``units``: ``processed`` or ``duplicate`` each, or
    ``failed``/``unavailable`` for one whose own transaction failed too."""
    try:
        return _commit_together(database, units, consumer_group, use_inbox)
    except Exception as error:
        if len(units) == 1:
            unit = units[0]
            if is_unavailable(error):
                return [AttemptResult("unavailable", unit.event.id, error=error, event=unit.event)]
            return [AttemptResult("failed", unit.event.id, error=error, event=unit.event)]
    # Each on its own: a write of one event must not fail the others.
    return [
        commit(database, [unit], consumer_group=consumer_group, use_inbox=use_inbox)[0]
        for unit in units
    ]
