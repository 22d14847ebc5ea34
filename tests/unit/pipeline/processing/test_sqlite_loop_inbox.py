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
from pipeline.envelope import Event, encode
from pipeline.processing import UnitOfWork, inbox
from pipeline.processing.attempt import AttemptResult
from pipeline.processing.group_commit import Seen, commit, look_up
from pipeline.processing.records import Record
from pipeline.processing.sqlite_loop_inbox import SqliteLoopInbox, sqlite_file_of
from pipeline.settings import DatabaseSettings

GROUP = "sqlite-loop-inbox-tests"
TOPIC = "requests.orders"


def unit_of(n: int, offset: int) -> UnitOfWork:
    event = Event(source="/tests", type="Placed", partitionkey=f"k{n}", data={"n": n})
    message = encode(event)
    record = Record(TOPIC, 0, offset, message.key, message.value, list(message.headers), None)
    return UnitOfWork(_session=None, event=event, record=record, consumer_group=GROUP)


def loop_inbox(database: Engine, fallbacks: list[list[UnitOfWork]]) -> SqliteLoopInbox:
    """A loop inbox on ``database``'s file whose thread path commits to ``database``, noting
    each group it gets in ``fallbacks``."""

    async def commit_in_thread(units: list[UnitOfWork]) -> list[AttemptResult]:
        fallbacks.append(units)
        return await asyncio.to_thread(
            commit, database, units, consumer_group=GROUP, use_inbox=True
        )

    path = sqlite_file_of(database)
    assert path is not None
    return SqliteLoopInbox(
        path, consumer_group=GROUP, park_keys=True, commit_in_thread=commit_in_thread
    )


def recorded(database: Engine, units: list[UnitOfWork]) -> dict[str, str]:
    with database.connect() as connection:
        return inbox.outcomes_of(
            connection, consumer_group=GROUP, event_ids=[u.event.id for u in units]
        )


def test_claims_then_look_ups_answer_as_the_thread_path(database: Engine) -> None:
    units = [unit_of(n, n) for n in range(4)]
    with database.begin() as connection:
        inbox.park_key(
            connection, consumer_group=GROUP, topic=TOPIC, key=b"k3", event_id="x", reason="r"
        )
    items = [(u.event.id, TOPIC, u.record.key) for u in units] + [("unknown", TOPIC, b"k9")]
    fallbacks: list[list[UnitOfWork]] = []

    async def scenario() -> tuple[list[str], list[str], list[Seen]]:
        store = loop_inbox(database, fallbacks)
        try:
            first = await store.claim(units[:2])
            second = await store.claim([units[1], units[2], units[2]])
            seen = await store.look_up(items)
        finally:
            await store.close()
        return [r.kind for r in first], [r.kind for r in second], seen

    first, second, seen = asyncio.run(scenario())

    assert first == ["processed", "processed"]
    # units[1] was claimed before; the second units[2] of one group is a copy of the first
    assert second == ["duplicate", "processed", "duplicate"]
    assert seen == look_up(database, items, consumer_group=GROUP, park_keys=True)
    assert [s.outcome for s in seen] == ["processed", "processed", "processed", None, None]
    assert [s.parked for s in seen] == [False, False, False, True, False]
    assert fallbacks == []
    assert recorded(database, units[:3]) == {u.event.id: "processed" for u in units[:3]}


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
