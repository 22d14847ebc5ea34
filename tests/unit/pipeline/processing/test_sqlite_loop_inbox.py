"""The inbox's look-ups and claims on the event loop on SQLite (pipeline.processing.
sqlite_loop_inbox): the same answers as the thread path; a claim that would wait for another
connection's lock, or that fails, committed by the thread path instead, at once."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy.engine import Engine

from pipeline.database import build_engine
from pipeline.processing import UnitOfWork
from pipeline.processing.sqlite_loop_inbox import SqliteLoopInbox, sqlite_file_of
from pipeline.settings import DatabaseSettings
from tests.support.loop_inboxes import (
    GROUP,
    assert_claims_then_look_ups_answer_as_the_thread_path,
    recorded,
    thread_path,
    unit_of,
)


def loop_inbox(database: Engine, fallbacks: list[list[UnitOfWork]]) -> SqliteLoopInbox:
    """A loop inbox on ``database``'s file whose thread path commits to ``database``, noting
    each group it gets in ``fallbacks``."""
    path = sqlite_file_of(database)
    assert path is not None
    return SqliteLoopInbox(
        path,
        consumer_group=GROUP,
        park_keys=True,
        commit_in_thread=thread_path(database, fallbacks),
    )


def test_claims_then_look_ups_answer_as_the_thread_path(database: Engine) -> None:
    assert_claims_then_look_ups_answer_as_the_thread_path(
        database, lambda fallbacks: loop_inbox(database, fallbacks)
    )


def test_a_claim_that_would_wait_for_a_lock_goes_to_the_thread_path_at_once(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    units = [unit_of(n, 10 + n) for n in range(3)]
    fallbacks: list[list[UnitOfWork]] = []
    waited: list[float] = []

    async def scenario() -> list[str]:
        store = loop_inbox(database, fallbacks)
        holder = database.raw_connection()  # another writer holds the lock for 0.3 s
        holder.execute("BEGIN IMMEDIATE")  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, holder.commit)
        try:
            began = time.monotonic()
            claim = asyncio.ensure_future(store.claim(units))
            await asyncio.sleep(0)  # the claim ran up to its fallback, which waits in a thread
            waited.append(time.monotonic() - began)
            results = await claim
        finally:
            holder.close()
            await store.close()
        return [r.kind for r in results]

    with caplog.at_level(logging.WARNING, logger="pipeline.processing"):
        assert asyncio.run(scenario()) == ["processed"] * 3
    assert fallbacks == [units]
    assert waited[0] < 0.2  # the loop was not held while the lock was taken
    assert recorded(database, units) == {u.event.id: "processed" for u in units}
    assert "inbox claims on the event loop failed" not in caplog.text  # a lock is no failure


def test_a_claim_that_fails_otherwise_is_logged_and_committed_by_the_thread_path(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    units = [unit_of(n, 20 + n) for n in range(2)]
    fallbacks: list[list[UnitOfWork]] = []

    async def scenario() -> list[str]:
        store = loop_inbox(database, fallbacks)
        store._connect().execute("PRAGMA query_only=ON")  # its writes fail
        try:
            return [r.kind for r in await store.claim(units)]
        finally:
            await store.close()

    with caplog.at_level(logging.WARNING, logger="pipeline.processing"):
        assert asyncio.run(scenario()) == ["processed"] * 2
    assert fallbacks == [units]
    assert "inbox claims on the event loop failed" in caplog.text
    assert recorded(database, units) == {u.event.id: "processed" for u in units}


def test_only_a_sqlite_file_gets_a_loop_inbox(tmp_path) -> None:
    path = tmp_path / "inbox.db"
    on_file = build_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    in_memory = build_engine(DatabaseSettings(url="sqlite://"))
    postgres = build_engine(
        DatabaseSettings(url="postgresql+psycopg://pipeline@127.0.0.1:1/pipeline")
    )

    assert sqlite_file_of(on_file) == str(path)
    assert sqlite_file_of(in_memory) is None
    assert sqlite_file_of(postgres) is None
