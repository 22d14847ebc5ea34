"""The inbox's look-ups and claims on the event loop (pipeline.processing.loop_inbox), on the
real PostgreSQL: the same answers as the thread path, and a claim that cannot use its own
connections committed by the thread path instead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.envelope import Event, encode
from pipeline.processing import UnitOfWork, inbox
from pipeline.processing.attempt import AttemptResult
from pipeline.processing.group_commit import Seen, commit, look_up
from pipeline.processing.loop_inbox import LoopInbox
from pipeline.processing.records import Record
from pipeline.settings import DatabaseSettings

GROUP = "loop-inbox-tests"
TOPIC = "requests.orders"


@pytest.fixture
def database(postgres_url: str) -> Iterator[Engine]:
    engine = build_engine(DatabaseSettings(url=postgres_url), pool_size=4)
    migrate(engine)
    yield engine
    engine.dispose()


def unit_of(n: int, offset: int) -> UnitOfWork:
    event = Event(source="/tests", type="Placed", partitionkey=f"k{n}", data={"n": n})
    message = encode(event)
    record = Record(TOPIC, 0, offset, message.key, message.value, list(message.headers), None)
    return UnitOfWork(_session=None, event=event, record=record, consumer_group=GROUP)


def loop_inbox(
    database: Engine, fallbacks: list[list[UnitOfWork]], *, own: Engine | None = None
) -> LoopInbox:
    """A loop inbox on ``own`` (default: ``database``) whose thread path commits to
    ``database``, noting each group it gets in ``fallbacks``."""

    async def commit_in_thread(units: list[UnitOfWork]) -> list[AttemptResult]:
        fallbacks.append(units)
        return await asyncio.to_thread(
            commit, database, units, consumer_group=GROUP, use_inbox=True
        )

    return LoopInbox(
        own or database, consumer_group=GROUP, park_keys=True, commit_in_thread=commit_in_thread
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


def test_a_claim_whose_connections_fail_is_committed_by_the_thread_path(
    database: Engine, postgres_url: str
) -> None:
    units = [unit_of(n, 10 + n) for n in range(3)]
    fallbacks: list[list[UnitOfWork]] = []

    # Its own connections go to a database that does not exist; the thread path's to ours.
    unreachable = build_engine(DatabaseSettings(url=postgres_url + "_missing"))

    async def scenario() -> list[str]:
        store = loop_inbox(database, fallbacks, own=unreachable)
        try:
            results = await store.claim(units)
        finally:
            await store.close()
        return [r.kind for r in results]

    assert asyncio.run(scenario()) == ["processed"] * 3
    assert fallbacks == [units]
    with database.connect() as connection:
        recorded = inbox.outcomes_of(
            connection, consumer_group=GROUP, event_ids=[u.event.id for u in units]
        )
    assert recorded == {u.event.id: "processed" for u in units}
