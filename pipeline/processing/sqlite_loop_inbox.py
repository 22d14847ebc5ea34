"""The inbox's group look-ups, and the claims of groups that wrote nothing else, on SQLite from
the event loop itself, on a connection of the loop's own that never waits for a lock.

On SQLite a look-up or a claim is work of the interpreter, not a wait (there is no server), so
handing it to a worker thread only added the hand-off both ways, and a thread that waits for
the interpreter while the loop runs: with a no-op handler, ordering per key and the inbox made
15,290 events/s on the thread path and 18,127 with this module (bench/processing.py B, 5
rounds each), 0.72x and 0.84x of the same runtime without them.

What may not run on the loop is a wait. So this connection's busy timeout is 0:

- a look-up only reads, and in WAL mode (which :mod:`pipeline.database` sets) a reader never
  waits for a writer; one that fails anyway raises, and the engine takes the per-record attempt;
- a claim takes the write lock at once (``BEGIN IMMEDIATE``) or not at all: when another
  connection holds it (a group with the handlers' writes committing in a thread, another
  process), the group is committed on the thread path instead, which waits its turn, as does
  a claim that fails for any other reason (that path tells each event's outcome).

A claim runs within one turn of the loop, so nothing joins its group meanwhile: the claims'
grouper lingers a few turns while handlers start (:mod:`~pipeline.processing.group_wiring`).

SQLite checkpoints its write-ahead log in the connection whose commit passes 1,000 pages,
so now and then a claim's commit also copies the log into the database (a few milliseconds
on the loop, about once per 10,000 events).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

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

__all__ = ["SqliteLoopInbox", "sqlite_file_of"]

logger = logging.getLogger("pipeline.processing")


def sqlite_file_of(engine: Engine) -> str | None:
    """The file of a SQLite engine; ``None`` for another database or one in memory (which a
    second connection would not see)."""
    url = engine.url
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or url.query:  # URI forms and options: leave them alone
        return None
    return database


class SqliteLoopInbox:
    """Look-ups and claims of ``consumer_group``'s events in the SQLite file ``path``, on one
    connection used only by the event loop's thread; ``commit_in_thread`` commits a group the
    thread path's way (a claim's fallback)."""

    def __init__(
        self,
        path: str,
        *,
        consumer_group: str,
        park_keys: bool,
        commit_in_thread: Callable[[list[UnitOfWork]], Awaitable[list[AttemptResult]]],
    ) -> None:
        self._path = path
        self._consumer_group = consumer_group
        self._park_keys = park_keys
        self._commit_in_thread = commit_in_thread
        self._connection: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteLoopInbox({self._consumer_group!r})"

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # timeout=0: a lock held elsewhere is an error at once, never a wait on the loop.
            # isolation_level=None: each statement commits by itself unless BEGIN says so.
            # check_same_thread=False: a test harness may run the engine's loop on another
            # thread than the one that first used it (one statement at a time either way).
            connection = sqlite3.connect(
                self._path, timeout=0, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA synchronous=NORMAL")  # as the engine's connections
            self._connection = connection
        return self._connection

    async def look_up(self, items: list[tuple[str, str, bytes | None]]) -> list[Seen]:
        """As :func:`~pipeline.processing.group_commit.look_up`."""
        look = look_up_statement(
            "sqlite", items, consumer_group=self._consumer_group, park_keys=self._park_keys
        )
        return seen_in_rows(items, self._connect().execute(look.statement, look.values), look)

    async def claim(self, units: list[UnitOfWork]) -> list[AttemptResult]:
        """Record the events of ``units`` (none of which wrote anything else): ``processed``
        or ``duplicate`` each."""
        try:
            new = self._claim(inbox_entries(units))
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                self._warn(error)
            return await self._commit_in_thread(units)
        except Exception as error:  # the thread path tells each event's outcome
            self._warn(error)
            return await self._commit_in_thread(units)
        return claimed_outcomes(units, new)

    def _claim(self, entries: Sequence[inbox.InboxEntry]) -> set[str]:
        connection = self._connect()
        statements = inbox.claim_many_statements(
            "sqlite",
            entries,
            consumer_group=self._consumer_group,
            recorded_at=inbox.recorded_at_value("sqlite", datetime.now(UTC)),
        )
        connection.execute("BEGIN IMMEDIATE")
        try:
            new: set[str] = set()
            for statement, values in statements:
                new.update(row[0] for row in connection.execute(statement, values))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return new

    def _warn(self, error: Exception) -> None:
        logger.warning(
            "%s: inbox claims on the event loop failed (%s): committing from a thread",
            self._consumer_group,
            " ".join(str(error).split())[:200],
        )

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
