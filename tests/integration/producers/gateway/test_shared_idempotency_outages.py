"""The shared Idempotency-Key store when PostgreSQL cannot take a statement, on the real
PostgreSQL: a claim whose first run committed is recognised as ours, an answer that cannot be
stored is kept (replayed by this process) and stored once the database answers again, and a
key claimed by another process gets a 409 that says when its claim expires."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from pipeline.async_postgres import LoopConnection
from pipeline.database import build_engine, migrate
from pipeline.ports import free_port
from pipeline.settings import DatabaseSettings
from producers.gateway.idempotency import InFlight, Replay, StoredAnswer
from producers.gateway.shared_idempotency import PostgresIdempotency, _Claim

ACCEPTED = StoredAnswer(202, b'{"event_id":"e"}')


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = build_engine(DatabaseSettings(url=postgres_url))
    migrate(engine)
    yield engine
    engine.dispose()


def store_of(engine: Engine) -> PostgresIdempotency:
    return PostgresIdempotency(
        engine, ttl_s=3600, claim_lease_s=60, wait_s=0.2, poll_s=0.01, settle_retry_s=0.05
    )


def test_a_claim_run_again_after_its_first_run_committed_is_still_ours(engine: Engine):
    # What LoopConnection's second run meets when the connection died after the first committed.
    async def scenario() -> list[tuple[bool, object]]:
        store = store_of(engine)
        claim = _Claim("client", "key", "fp", "token-of-ours")
        try:
            first = await store._claim_batch([claim])
            again = await store._claim_batch([claim])
            other = await store._claim_batch([_Claim("client", "key", "fp", "someone-else")])
        finally:
            await store.close()
        return [*first, *again, (other[0][0], None)]

    assert asyncio.run(scenario()) == [(True, None), (True, None), (False, None)]


def test_an_answer_the_database_refuses_is_replayed_from_memory_and_stored_once_it_answers(
    engine: Engine,
):
    async def scenario() -> tuple[object, object, object]:
        store, replica = store_of(engine), store_of(engine)
        try:
            begun = await store.begin("client", "key", "fp")
            assert not isinstance(begun, Replay | InFlight)
            answers_db = store._answers_db
            store._answers_db = LoopConnection(f"host=127.0.0.1 port={free_port()} user=nobody")
            begun.complete(ACCEPTED)
            await asyncio.sleep(0.3)  # a few attempts in vain
            from_memory = await store.begin("client", "key", "fp")
            waiting = await replica.begin("client", "key", "fp")  # the claim keeps the key
            store._answers_db = answers_db  # the database answers again
            await asyncio.sleep(0.5)
            stored = await replica.begin("client", "key", "fp")
        finally:
            await store.close()
            await replica.close()
        return from_memory, waiting, stored

    from_memory, waiting, stored = asyncio.run(scenario())

    assert from_memory == Replay(ACCEPTED)
    assert isinstance(waiting, InFlight)
    assert waiting.expires_in_s is not None and 58 < waiting.expires_in_s <= 60
    assert 0 <= waiting.claimed_s_ago < 2
    assert stored == Replay(ACCEPTED)
