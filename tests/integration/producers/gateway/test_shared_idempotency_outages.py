"""The shared Idempotency-Key store when PostgreSQL cannot take a statement, on the real
PostgreSQL: a claim whose first run committed is recognised as ours, an answer that cannot be
stored is kept (replayed by this process) and stored once the database answers again, and a
key claimed by another process gets a 409 that says when its claim expires, and no more (not
when it was claimed: the rows do not keep that, and the lease the claim got is the claiming
gateway's, whose settings may differ)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.engine import Engine

from pipeline.async_postgres import LoopConnection
from pipeline.ports import free_port
from producers.gateway.answers import still_in_flight
from producers.gateway.idempotency import InFlight, Replay, StoredAnswer
from producers.gateway.shared_idempotency import PostgresIdempotency, _Claim

ACCEPTED = StoredAnswer(202, b'{"event_id":"e"}')


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
    assert waiting.claimed_s_ago is None  # not known: the row keeps when it expires
    assert stored == Replay(ACCEPTED)


def test_a_claim_of_a_gateway_with_a_shorter_lease_is_not_said_to_be_older(engine: Engine):
    # A gateway with a 10 s produce timeout claimed a key; restarted with the default 30 s (a
    # longer lease), it told a retry "was claimed 99 s ago" of a claim made 78.5 s before: the
    # age was its own lease minus the time left, not the claimer's.
    async def scenario() -> object:
        claimer = PostgresIdempotency(engine, ttl_s=3600, claim_lease_s=30, wait_s=0.05)
        restarted = PostgresIdempotency(engine, ttl_s=3600, claim_lease_s=300, wait_s=0.05)
        try:
            claimed = await claimer.begin("client", "key", "fp")
            assert not isinstance(claimed, Replay | InFlight)
            return await restarted.begin("client", "key", "fp")
        finally:
            await claimer.close()
            await restarted.close()

    waiting = asyncio.run(scenario())

    assert isinstance(waiting, InFlight)
    assert waiting.claimed_s_ago is None
    assert waiting.expires_in_s is not None and 28 < waiting.expires_in_s <= 30  # the claimer's
    message = still_in_flight(waiting.claimed_s_ago, waiting.expires_in_s).message
    assert "ago" not in message
    assert "the claim expires in 30 s" in message


def _dead() -> LoopConnection:
    return LoopConnection(f"host=127.0.0.1 port={free_port()} user=nobody")


def test_a_waiter_in_the_process_holding_the_unstored_answer_gets_it_from_memory(
    engine: Engine,
):
    async def scenario() -> object:
        store = PostgresIdempotency(
            engine, ttl_s=3600, claim_lease_s=60, wait_s=1.0, poll_s=0.01, settle_retry_s=0.05
        )
        try:
            begun = await store.begin("client", "key", "fp")
            waiting = await store.begin("client", "key", "fp")  # a retry while it produces
            assert isinstance(waiting, InFlight)
            answers_db, store._answers_db = store._answers_db, _dead()
            begun.complete(ACCEPTED)  # not stored: the database is away for answers
            answer = await asyncio.wait_for(asyncio.wrap_future(waiting.future), 2)
            store._answers_db = answers_db
            return answer
        finally:
            await store.close()

    assert asyncio.run(scenario()) == ACCEPTED


def test_an_answer_whose_claim_expired_meanwhile_is_logged_at_error_naming_its_key(
    engine: Engine, caplog: pytest.LogCaptureFixture
):
    async def scenario() -> None:
        store, replica = (
            PostgresIdempotency(
                engine, ttl_s=3600, claim_lease_s=0.2, wait_s=0.2, poll_s=0.01, settle_retry_s=0.05
            )
            for _ in range(2)
        )
        try:
            begun = await store.begin("client", "key-7", "fp")
            answers_db, store._answers_db = store._answers_db, _dead()
            begun.complete(ACCEPTED)
            await asyncio.sleep(0.4)  # the database away past the claim's lease
            again = await replica.begin("client", "key-7", "fp")
            assert not isinstance(again, Replay | InFlight)  # claimed anew
            store._answers_db = answers_db
            await asyncio.sleep(0.5)
        finally:
            await store.close()
            await replica.close()

    caplog.set_level("INFO", logger="producers.gateway")
    asyncio.run(scenario())

    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "'key-7'" in errors[0] and "second event" in errors[0]
    assert not [r for r in caplog.records if "stored now" in r.getMessage()]


def test_answers_not_stored_in_an_outage_log_one_warning_and_one_info_per_outage(
    engine: Engine, caplog: pytest.LogCaptureFixture
):
    async def outage(store: PostgresIdempotency, keys: list[str]) -> None:
        claims = [await store.begin("client", key, "fp") for key in keys]
        answers_db, store._answers_db = store._answers_db, _dead()
        for claim in claims:
            assert not isinstance(claim, Replay | InFlight)
            claim.complete(ACCEPTED)
        await asyncio.sleep(0.3)
        store._answers_db = answers_db
        await asyncio.sleep(0.5)

    async def scenario() -> list[object]:
        store, replica = store_of(engine), store_of(engine)
        try:
            await outage(store, [f"key-{n}" for n in range(5)])
            await outage(store, ["key-5", "key-6"])
            return [await replica.begin("client", f"key-{n}", "fp") for n in range(7)]
        finally:
            await store.close()
            await replica.close()

    caplog.set_level("INFO", logger="producers.gateway")
    assert asyncio.run(scenario()) == [Replay(ACCEPTED)] * 7

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    infos = [r.getMessage() for r in caplog.records if "stored now" in r.getMessage()]
    # One WARNING as each outage begins, without a count (it said "1" of the 40 that followed).
    assert len(warnings) == 2
    assert all(w.startswith("Idempotency-Key answers cannot be stored (") for w in warnings)
    assert all("503 idempotency_unavailable" in w for w in warnings)
    assert infos == [
        "5 Idempotency-Key answers that could not be stored at first are stored now",
        "2 Idempotency-Key answers that could not be stored at first are stored now",
    ]


def test_waiters_sharing_a_connection_the_server_drops_all_get_the_stored_answer(
    engine: Engine,
):
    async def scenario() -> list[object]:
        store = store_of(engine)
        replica = PostgresIdempotency(
            engine, ttl_s=3600, claim_lease_s=60, wait_s=3.0, poll_s=0.01, settle_retry_s=0.05
        )
        try:
            begun = await store.begin("client", "key", "fp")
            waiting = [await replica.begin("client", "key", "fp") for _ in range(20)]
            assert all(isinstance(w, InFlight) for w in waiting)
            await asyncio.sleep(0.1)  # the waiters poll the replica's reads connection
            with engine.connect() as admin:
                admin.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            begun.complete(ACCEPTED)
            futures = [asyncio.wrap_future(w.future) for w in waiting if isinstance(w, InFlight)]
            done, _ = await asyncio.wait(futures, timeout=4)
            return [f.result() if f in done else "no answer" for f in futures]
        finally:
            await store.close()
            await replica.close()

    assert asyncio.run(scenario()) == [ACCEPTED] * 20
