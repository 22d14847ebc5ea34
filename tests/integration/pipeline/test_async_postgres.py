"""LoopConnection on the real PostgreSQL: a connection the server dropped between statements
(``pg_terminate_backend``, as a restart, a failover or an idle reaper does)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from pipeline.async_postgres import LoopConnection, libpq_conninfo


@pytest.fixture
def conninfo(postgres_url: str) -> str:
    return libpq_conninfo(create_engine(make_url(postgres_url)))


async def _terminate(conninfo: str, pid: int) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await asyncio.sleep(0.2)  # the backend is gone before the next statement is sent


def test_an_idempotent_statement_runs_again_on_a_new_connection_when_its_was_dropped(
    conninfo: str,
):
    async def scenario() -> tuple[list[int], list[int]]:
        connection = LoopConnection(conninfo)
        try:
            await connection.execute("CREATE TABLE seen (n integer PRIMARY KEY)", None)
            [first] = await connection.execute("SELECT pg_backend_pid() AS pid", None)
            await _terminate(conninfo, first.pid)
            rows = await connection.execute(
                "INSERT INTO seen VALUES (1) ON CONFLICT DO NOTHING RETURNING n",
                None,
                idempotent=True,
            )
            [second] = await connection.execute("SELECT pg_backend_pid() AS pid", None)
            return [row.n for row in rows], [first.pid, second.pid]
        finally:
            await connection.close()

    inserted, pids = asyncio.run(scenario())

    assert inserted == [1]
    assert pids[0] != pids[1]  # on a new connection


def test_another_statement_fails_on_a_dropped_connection_and_the_next_one_reconnects(
    conninfo: str,
):
    async def scenario() -> int:
        connection = LoopConnection(conninfo)
        try:
            [first] = await connection.execute("SELECT pg_backend_pid() AS pid", None)
            await _terminate(conninfo, first.pid)
            with pytest.raises(psycopg.OperationalError):
                await connection.execute("SELECT 1", None)
            [row] = await connection.execute("SELECT 2 AS n", None)
            return int(row.n)
        finally:
            await connection.close()

    assert asyncio.run(scenario()) == 2


def test_a_statement_the_server_refuses_on_a_live_connection_is_not_run_again(conninfo: str):
    async def scenario() -> None:
        connection = LoopConnection(conninfo)
        try:
            await connection.execute("SET statement_timeout = 50", None)
            with pytest.raises(psycopg.errors.QueryCanceled):
                await connection.execute("SELECT pg_sleep(1)", None, idempotent=True)
        finally:
            await connection.close()

    asyncio.run(scenario())
