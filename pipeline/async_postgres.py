"""PostgreSQL on the event loop: one autocommit psycopg connection, for the statements a
program runs many times a second from asyncio code (the gateway's shared Idempotency-Key store,
the processors' inbox look-ups and claims).

A worker thread per statement costs more than the statement: the thread needs the interpreter
back after each wait for the network, and gets it only when the busy event loop lets go of it
(``sys.getswitchinterval``), so a 0.2 ms query took 1.4 ms (p50) in a processor's worker
thread. On the loop, psycopg's asyncio connection waits for the reply like any socket.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, quote_plus

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Engine

__all__ = ["LoopConnection", "libpq_conninfo", "without_password"]


def libpq_conninfo(engine: Engine) -> str:
    """The engine's connection for libpq, with its password (:func:`pipeline.database.build_engine`
    put it there), as ``key=value`` pairs each quoted as libpq reads them (psycopg's
    ``make_conninfo``). Not the URL: SQLAlchemy writes a password's space as it is, which
    libpq refuses with an error that quotes the whole password ("unexpected spaces found in
    ..."), an error the gateway answered a client with and the relay logged."""
    url = engine.url
    parts: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }
    for name, value in url.query.items():  # libpq's own options: sslmode, connect_timeout...
        parts[name] = value[-1] if isinstance(value, tuple) else value
    return make_conninfo(**{name: value for name, value in parts.items() if value is not None})


def without_password(text: str, engine: Engine) -> str:
    """``text`` (a database error's, said to a client or logged) with the engine's password,
    as written and percent-encoded, replaced by ``***``: whatever libpq chose to quote."""
    password = engine.url.password
    if not password:
        return text
    for form in {str(password), quote(str(password), safe=""), quote_plus(str(password))}:
        text = text.replace(form, "***")
    return text


class LoopConnection:
    """One autocommit psycopg connection on the event loop: opened on first use, and again
    after it failed (a database restarted, a network cut). Each statement is its own
    transaction (no ``BEGIN``/``COMMIT`` round trips); rows are named tuples.

    A connection lost under a statement (PostgreSQL restarted or failed over, an idle reaper,
    ``pg_terminate_backend``) is found only when the next statement is sent on it: an
    ``idempotent`` statement is then run once more on a fresh connection, so that a dropped
    connection costs no statement. Only such a one: the first attempt may have committed before
    the connection died (autocommit), so it must be a statement whose second run changes
    nothing more, or whose caller recognises its own first run (a token it wrote).

    Tasks share it: a lock lets one statement at a time use the connection (psycopg would run
    them one at a time anyway) and is held to close or replace it, so that no task closes the
    connection another task's statement is waiting on (its socket closed while still
    registered with the event loop aborted uvloop). A statement waiting for the lock when the
    connection was lost runs on the new one."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # the conninfo holds the password
        return "LoopConnection()"

    async def execute(self, statement: str, values: Any, *, idempotent: bool = False) -> list[Any]:
        """The rows of ``statement`` (none for one that returns none); ``idempotent``: run it
        once more on a fresh connection if its connection was lost under it (see the class)."""
        attempts = 2 if idempotent else 1
        while True:
            attempts -= 1
            async with self._lock:
                if self._connection is None or self._connection.closed:
                    self._connection = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, row_factory=namedtuple_row
                    )
                connection = self._connection
                try:
                    cursor = await connection.execute(statement, values)
                    return await cursor.fetchall() if cursor.description is not None else []
                except psycopg.OperationalError:
                    lost = connection.broken  # else the server refused it on a live connection
                    await self._close()  # broken, or in an unknown state: the next use reconnects
                    if not (lost and attempts):
                        raise

    async def close(self) -> None:
        """Close the connection, once the statement using it (if any) is done."""
        async with self._lock:
            await self._close()

    async def _close(self) -> None:  # with the lock held
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
