"""What the tests of the two loop inboxes (PostgreSQL's and SQLite's) share: units of work to
claim, and the scenario whose answers must be the thread path's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy.engine import Engine

from pipeline.envelope import Event, encode
from pipeline.processing import UnitOfWork, inbox, parked_keys
from pipeline.processing.attempt import AttemptResult
from pipeline.processing.group_commit import Seen, commit, look_up
from pipeline.processing.records import Record

GROUP = "loop-inbox-tests"
TOPIC = "requests.orders"


class LoopInbox(Protocol):
    async def look_up(self, items: list[tuple[str, str, bytes | None]]) -> list[Seen]: ...

    async def claim(self, units: list[UnitOfWork]) -> list[AttemptResult]: ...

    async def close(self) -> None: ...


def unit_of(n: int, offset: int) -> UnitOfWork:
    event = Event(source="/tests", type="Placed", partitionkey=f"k{n}", data={"n": n})
    message = encode(event)
    record = Record(TOPIC, 0, offset, message.key, message.value, list(message.headers), None)
    return UnitOfWork(_session=None, event=event, record=record, consumer_group=GROUP)


def thread_path(
    database: Engine, fallbacks: list[list[UnitOfWork]]
) -> Callable[[list[UnitOfWork]], Awaitable[list[AttemptResult]]]:
    """A loop inbox's ``commit_in_thread`` committing to ``database``, noting each group it
    gets in ``fallbacks``."""

    async def commit_in_thread(units: list[UnitOfWork]) -> list[AttemptResult]:
        fallbacks.append(units)
        return await asyncio.to_thread(
            commit, database, units, consumer_group=GROUP, use_inbox=True
        )

    return commit_in_thread


def recorded(database: Engine, units: list[UnitOfWork]) -> dict[str, str]:
    with database.connect() as connection:
        return inbox.outcomes_of(
            connection, consumer_group=GROUP, event_ids=[u.event.id for u in units]
        )


def assert_claims_then_look_ups_answer_as_the_thread_path(
    database: Engine, store: Callable[[list[list[UnitOfWork]]], LoopInbox]
) -> None:
    """Claims (a duplicate, a copy within a group) and a look-up (a parked key, an unknown
    id) through ``store(fallbacks)``: the thread path's answers, and no group handed to the
    thread path (which notes them in ``fallbacks``)."""
    units = [unit_of(n, n) for n in range(4)]
    with database.begin() as connection:
        parked_keys.park_key(
            connection, consumer_group=GROUP, topic=TOPIC, key=b"k3", event_id="x", reason="r"
        )
    items = [(u.event.id, TOPIC, u.record.key) for u in units] + [("unknown", TOPIC, b"k9")]

    fallbacks: list[list[UnitOfWork]] = []

    async def scenario() -> tuple[list[str], list[str], list[Seen]]:
        opened = store(fallbacks)
        try:
            first = await opened.claim(units[:2])
            second = await opened.claim([units[1], units[2], units[2]])
            seen = await opened.look_up(items)
        finally:
            await opened.close()
        return [r.kind for r in first], [r.kind for r in second], seen

    first, second, seen = asyncio.run(scenario())

    assert first == ["processed", "processed"]
    # units[1] was claimed before; the second units[2] of one group is a copy of the first
    assert second == ["duplicate", "processed", "duplicate"]
    assert seen == look_up(database, items, consumer_group=GROUP, park_keys=True)
    assert [s.outcome for s in seen] == ["processed", "processed", "processed", None, None]
    assert [s.parked for s in seen] == [False, False, False, True, False]
    assert recorded(database, units[:3]) == {u.event.id: "processed" for u in units[:3]}
    assert fallbacks == []
