"""The inbox's group look-ups, and the claims of groups that wrote nothing else, on
PostgreSQL from the event loop itself (:mod:`pipeline.async_postgres`).

The thread path (:func:`~pipeline.processing.group_commit.look_up`,
:func:`~pipeline.processing.group_commit.commit`) spent most of a group's time waiting for the
interpreter in its worker thread, not for PostgreSQL: a 0.2 ms look-up took 1.4 ms (p50) in the
thread and 2.5-6.4 ms from the handler's wait to its answer, which is what bounds a processor
whose events mostly wait (``max_in_flight`` events, each waiting for two groups). Here the
same statements run on a few autocommit connections of the loop's own, each statement its own
transaction, as durable as the thread path's commit.

A look-up that fails raises (the engine then takes the per-record attempt, which waits for the
database). A claim that fails is committed again on the thread path, which tells each event's
outcome (``unavailable`` while the database is away, a write's own failure, ...).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from pipeline.async_postgres import LoopConnection, libpq_conninfo
from pipeline.processing import inbox
from pipeline.processing.attempt import AttemptResult
from pipeline.processing.group_commit import (
    Seen,
    claimed_outcomes,
    inbox_entries,
    look_up_statement,
    seen_in_rows,
)
from pipeline.processing.processor import UnitOfWork

__all__ = ["LoopInbox"]

logger = logging.getLogger("pipeline.processing")


class _Connections:
    """``size`` connections, each used by one statement at a time."""

    def __init__(self, conninfo: str, size: int) -> None:
        self._all = [LoopConnection(conninfo) for _ in range(size)]
        self._idle: asyncio.Queue[LoopConnection] | None = None

    @asynccontextmanager
    async def one(self) -> AsyncIterator[LoopConnection]:
        if self._idle is None:  # made on the loop that uses it
            self._idle = asyncio.Queue()
            for connection in self._all:
                self._idle.put_nowait(connection)
        connection = await self._idle.get()
        try:
            yield connection
        finally:
            self._idle.put_nowait(connection)

    async def close(self) -> None:
        for connection in self._all:
            await connection.close()


class LoopInbox:
    """Look-ups and claims of ``consumer_group``'s events on ``engine``'s PostgreSQL, each kind
    on ``concurrency`` connections of its own; ``commit_in_thread`` commits a group the
    thread path's way (a claim's fallback)."""

    def __init__(
        self,
        engine: Engine,
        *,
        consumer_group: str,
        park_keys: bool,
        commit_in_thread: Callable[[list[UnitOfWork]], Awaitable[list[AttemptResult]]],
        concurrency: int = 2,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"a PostgreSQL engine is needed, got {engine.dialect.name}")
        conninfo = libpq_conninfo(engine)
        self._look_ups = _Connections(conninfo, concurrency)
        self._claims = _Connections(conninfo, concurrency)
        self._consumer_group = consumer_group
        self._park_keys = park_keys
        self._commit_in_thread = commit_in_thread

    def __repr__(self) -> str:  # the connections' conninfo holds the password
        return f"LoopInbox({self._consumer_group!r})"

    async def look_up(self, items: list[tuple[str, str, bytes | None]]) -> list[Seen]:
        """As :func:`~pipeline.processing.group_commit.look_up`."""
        look = look_up_statement(
            "postgresql", items, consumer_group=self._consumer_group, park_keys=self._park_keys
        )
        async with self._look_ups.one() as connection:
            rows = await connection.execute(look.statement, look.values)
        return seen_in_rows(items, rows, look)

    async def claim(self, units: list[UnitOfWork]) -> list[AttemptResult]:
        """Record the events of ``units`` (none of which wrote anything else): ``processed``
        or ``duplicate`` each."""
        try:
            new = await self._claim(inbox_entries(units))
        except Exception as error:  # the thread path tells each event's outcome
            logger.warning(
                "%s: inbox claims on the event loop failed (%s): committing from a thread",
                self._consumer_group,
                " ".join(str(error).split())[:200],
            )
            return await self._commit_in_thread(units)
        return claimed_outcomes(units, new)

    async def _claim(self, entries: Sequence[inbox.InboxEntry]) -> set[str]:
        new: set[str] = set()
        statements = inbox.claim_many_statements(
            "postgresql",
            entries,
            consumer_group=self._consumer_group,
            recorded_at=datetime.now(UTC),
        )
        async with self._claims.one() as connection:
            for statement, values in statements:
                new.update(row[0] for row in await connection.execute(statement, values))
        return new

    async def close(self) -> None:
        await self._look_ups.close()
        await self._claims.close()
