"""The inbox's look-ups and claims on the event loop (pipeline.processing.loop_inbox), on the
real PostgreSQL: the same answers as the thread path, and a claim that cannot use its own
connections committed by the thread path instead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.processing import UnitOfWork
from pipeline.processing.loop_inbox import LoopInbox
from pipeline.settings import DatabaseSettings
from tests.support.loop_inboxes import (
    GROUP,
    assert_claims_then_look_ups_answer_as_the_thread_path,
    recorded,
    thread_path,
    unit_of,
)


@pytest.fixture
def database(postgres_url: str) -> Iterator[Engine]:
    engine = build_engine(DatabaseSettings(url=postgres_url), pool_size=4)
    migrate(engine)
    yield engine
    engine.dispose()


def loop_inbox(
    database: Engine, fallbacks: list[list[UnitOfWork]], *, own: Engine | None = None
) -> LoopInbox:
    """A loop inbox on ``own`` (default: ``database``) whose thread path commits to
    ``database``, noting each group it gets in ``fallbacks``."""
    return LoopInbox(
        own or database,
        consumer_group=GROUP,
        park_keys=True,
        commit_in_thread=thread_path(database, fallbacks),
    )


def test_claims_then_look_ups_answer_as_the_thread_path(database: Engine) -> None:
    assert_claims_then_look_ups_answer_as_the_thread_path(
        database, lambda fallbacks: loop_inbox(database, fallbacks)
    )


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
    assert recorded(database, units) == {u.event.id: "processed" for u in units}
