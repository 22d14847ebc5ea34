"""The shared Idempotency-Key store writing claims and answers in batches, on the real
PostgreSQL: requests that arrive together are claimed together, each keeps its own outcome."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.engine import Engine

from producers.gateway.idempotency import (
    IdempotencyKeyReused,
    InFlight,
    Replay,
    Settle,
    StoredAnswer,
)
from producers.gateway.shared_idempotency import PostgresIdempotency

ACCEPTED = StoredAnswer(202, b'{"event_id":"e"}')


def claimed(begun: object) -> bool:
    """A claim to settle (Settle is a protocol): neither a replay nor a wait."""
    return not isinstance(begun, Replay | InFlight)


def store_of(engine: Engine) -> PostgresIdempotency:
    return PostgresIdempotency(engine, ttl_s=3600, claim_lease_s=60, wait_s=10, poll_s=0.01)


def test_keys_claimed_together_are_each_claimed_and_each_answer_is_replayed(engine: Engine):
    async def scenario() -> tuple[list[object], list[object]]:
        store = store_of(engine)
        begun = await asyncio.gather(
            *(store.begin(f"client-{n % 3}", f"key-{n}", f"fp-{n}") for n in range(300))
        )
        for n, claim in enumerate(begun):
            assert not isinstance(claim, Replay | InFlight)
            claim.complete(StoredAnswer(202, f'{{"n":{n}}}'.encode()))
        await store.drain()
        again = await asyncio.gather(
            *(store.begin(f"client-{n % 3}", f"key-{n}", f"fp-{n}") for n in range(300))
        )
        await store.close()
        return begun, again

    begun, again = asyncio.run(scenario())

    assert all(claimed(claim) for claim in begun)
    assert again == [Replay(StoredAnswer(202, f'{{"n":{n}}}'.encode())) for n in range(300)]


def test_one_key_sent_twice_at_once_is_claimed_once_and_the_other_gets_its_answer(
    engine: Engine,
):
    async def scenario() -> tuple[list[str], StoredAnswer | None]:
        store = store_of(engine)
        begun = await asyncio.gather(*(store.begin("shop", "same", "fp") for _ in range(2)))
        waiting = [claim for claim in begun if isinstance(claim, InFlight)]
        for claim in begun:
            if not isinstance(claim, Replay | InFlight):
                claim.complete(ACCEPTED)
        answer = await asyncio.wrap_future(waiting[0].future)
        await store.close()
        return sorted(type(claim).__name__ for claim in begun), answer

    kinds, answer = asyncio.run(scenario())

    assert kinds == ["InFlight", "_SharedClaim"]
    assert answer == ACCEPTED


def test_a_5xx_releases_the_claim_and_another_body_is_a_reused_key(engine: Engine):
    async def scenario() -> tuple[object, object]:
        store = store_of(engine)
        failed, answered = await asyncio.gather(
            store.begin("shop", "failed", "fp"), store.begin("shop", "answered", "fp")
        )
        assert not isinstance(failed, Replay | InFlight)
        assert not isinstance(answered, Replay | InFlight)
        failed.complete(StoredAnswer(503, b"{}"))
        answered.complete(ACCEPTED)
        await store.drain()
        retried = await store.begin("shop", "failed", "fp")
        with pytest.raises(IdempotencyKeyReused):
            await store.begin("shop", "answered", "another body")
        replayed = await store.begin("shop", "answered", "fp")
        await store.close()
        return retried, replayed

    retried, replayed = asyncio.run(scenario())

    assert claimed(retried)  # released: claimed anew, to produce again
    assert replayed == Replay(ACCEPTED)


def test_a_claim_settled_with_no_event_loop_running_is_stored_at_once(engine: Engine):
    store = store_of(engine)

    async def claim() -> Replay | InFlight | Settle:
        begun = await store.begin("shop", "late", "fp")
        await store.close()
        return begun

    begun = asyncio.run(claim())
    assert not isinstance(begun, Replay | InFlight)
    begun.complete(ACCEPTED)  # e.g. a delivery report after the loop stopped

    async def again() -> object:
        replay = await store.begin("shop", "late", "fp")
        await store.close()
        return replay

    assert asyncio.run(again()) == Replay(ACCEPTED)


def test_any_key_text_and_any_answer_bytes_come_back_exactly(engine: Engine):
    """A batch travels as JSON with base64 bodies: quotes, backslashes, non-ASCII keys and
    bytes that are not UTF-8 are stored and replayed as they were."""
    keys = ['quote " and \\ backslash', "ключ-🔑", "tab\tnewline\n", "plain"]
    bodies = [b"\x00\xff\xfe binary", "é".encode("latin-1"), b"", b'{"ok":true}']

    async def scenario() -> list[object]:
        store = store_of(engine)
        begun = await asyncio.gather(*(store.begin("client-ü", key, "fp") for key in keys))
        for claim, body in zip(begun, bodies, strict=True):
            assert claimed(claim)
            claim.complete(StoredAnswer(202, body))  # type: ignore[union-attr]
        await store.drain()
        again = await asyncio.gather(*(store.begin("client-ü", key, "fp") for key in keys))
        await store.close()
        return again

    assert asyncio.run(scenario()) == [Replay(StoredAnswer(202, body)) for body in bodies]
