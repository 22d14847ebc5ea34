"""The Idempotency-Key store: claims, replays, waits, conflicts, expiry, size. No event loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from producers.gateway.idempotency import (
    Claim,
    EvictionWarning,
    IdempotencyKeyReused,
    IdempotencyStore,
    InFlight,
    Replay,
    StoredAnswer,
    fingerprint,
    key_problem,
    local_idempotency,
)
from producers.gateway.metrics import GatewayMetrics

ACCEPTED = StoredAnswer(202, b'{"event_id":"e1","topic":"t","partition":0,"offset":7}')
UNAVAILABLE = StoredAnswer(503, b'{"error":{"code":"not_acknowledged"}}')
BODY = fingerprint("place_order", {"order_id": "o-1", "lines": [1, 2]})
OTHER_BODY = fingerprint("place_order", {"order_id": "o-2", "lines": [1, 2]})


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_store(ttl_s: float = 60.0, max_keys: int = 100) -> tuple[IdempotencyStore, FakeClock]:
    clock = FakeClock()
    return IdempotencyStore(ttl_s=ttl_s, max_keys=max_keys, clock=clock), clock


def claim(store: IdempotencyStore, key: str = "k1", client: str = "c1") -> Claim:
    begun = store.begin(client, key, BODY)
    assert isinstance(begun, Claim)
    return begun


def test_a_new_key_is_claimed_by_its_first_request():
    store, _ = make_store()

    assert isinstance(store.begin("c1", "k1", BODY), Claim)
    assert store.in_flight == 1


def test_a_completed_key_replays_the_first_answer():
    store, _ = make_store()
    store.complete(claim(store), ACCEPTED)

    assert store.begin("c1", "k1", BODY) == Replay(ACCEPTED)
    assert store.in_flight == 0


def test_a_key_still_in_flight_hands_out_the_first_answer_when_it_comes():
    store, _ = make_store()
    first = claim(store)

    second = store.begin("c1", "k1", BODY)
    assert isinstance(second, InFlight)
    assert not second.future.done()

    store.complete(first, ACCEPTED)
    assert second.future.result(timeout=0) == ACCEPTED


def test_an_abandoned_first_request_tells_its_waiters_to_begin_anew_and_frees_the_key():
    store, _ = make_store()
    first = claim(store)
    waiter = store.begin("c1", "k1", BODY)
    assert isinstance(waiter, InFlight)

    store.abandon(first)

    assert waiter.future.result(timeout=0) is None
    assert isinstance(store.begin("c1", "k1", BODY), Claim)


def test_a_waiter_cancelling_the_shared_future_does_not_stop_the_first_from_completing():
    store, _ = make_store()
    first = claim(store)
    waiter = store.begin("c1", "k1", BODY)
    assert isinstance(waiter, InFlight)
    waiter.future.cancel()

    store.complete(first, ACCEPTED)

    assert store.begin("c1", "k1", BODY) == Replay(ACCEPTED)


def test_a_5xx_answer_reaches_the_waiters_but_is_not_remembered():
    store, _ = make_store()
    first = claim(store)
    waiter = store.begin("c1", "k1", BODY)
    assert isinstance(waiter, InFlight)

    store.complete(first, UNAVAILABLE)

    assert waiter.future.result(timeout=0) == UNAVAILABLE
    assert isinstance(store.begin("c1", "k1", BODY), Claim)  # the retry does the work again
    assert len(store) == 0


def test_a_4xx_answer_is_remembered_like_a_2xx():
    store, _ = make_store()
    conflict = StoredAnswer(409, b"{}")
    store.complete(claim(store), conflict)

    assert store.begin("c1", "k1", BODY) == Replay(conflict)


def test_abandon_after_complete_changes_nothing():
    store, _ = make_store()
    first = claim(store)
    store.complete(first, ACCEPTED)

    store.abandon(first)

    assert store.begin("c1", "k1", BODY) == Replay(ACCEPTED)


def test_the_same_key_with_another_body_is_refused_once_completed():
    store, _ = make_store()
    store.complete(claim(store), ACCEPTED)

    with pytest.raises(IdempotencyKeyReused, match="different request body"):
        store.begin("c1", "k1", OTHER_BODY)


def test_the_same_key_with_another_body_is_refused_while_in_flight():
    store, _ = make_store()
    claim(store)

    with pytest.raises(IdempotencyKeyReused):
        store.begin("c1", "k1", OTHER_BODY)


def test_keys_are_per_client():
    store, _ = make_store()
    store.complete(claim(store, client="c1"), ACCEPTED)

    assert isinstance(store.begin("c2", "k1", OTHER_BODY), Claim)


def test_an_answer_is_forgotten_once_its_time_to_live_is_over():
    store, clock = make_store(ttl_s=10)
    store.complete(claim(store), ACCEPTED)

    clock.now = 9.9
    assert isinstance(store.begin("c1", "k1", BODY), Replay)
    clock.now = 10.0
    assert isinstance(store.begin("c1", "k1", OTHER_BODY), Claim)


def test_the_time_to_live_counts_from_the_answer_not_the_claim():
    store, clock = make_store(ttl_s=10)
    first = claim(store)
    clock.now = 8.0
    store.complete(first, ACCEPTED)

    clock.now = 17.0
    assert isinstance(store.begin("c1", "k1", BODY), Replay)


def test_past_max_keys_the_oldest_answers_are_forgotten():
    store, _ = make_store(max_keys=2)
    for key in ("k1", "k2", "k3"):
        store.complete(claim(store, key=key), ACCEPTED)

    assert len(store) == 2
    assert isinstance(store.begin("c1", "k1", BODY), Claim)
    assert isinstance(store.begin("c1", "k3", BODY), Replay)


def test_a_key_forgotten_before_its_ttl_is_reported_with_how_long_it_was_kept():
    clock = FakeClock()
    forgotten: list[float] = []
    store = IdempotencyStore(
        ttl_s=60.0, max_keys=2, clock=clock, on_early_eviction=forgotten.append
    )
    for at, key in ((0.0, "k1"), (5.0, "k2"), (12.0, "k3")):
        clock.now = at
        store.complete(claim(store, key=key), ACCEPTED)
    clock.now = 70.0  # k2 has expired: k4 takes its place, nothing live is forgotten
    store.complete(claim(store, key="k4"), ACCEPTED)

    assert forgotten == [12.0]  # k1, remembered 12 s of its 60


def test_a_full_store_warns_at_most_once_a_minute_and_counts_every_key_forgotten(caplog):
    clock = FakeClock()
    counted: list[None] = []
    warning = EvictionWarning(
        ttl_s=86400, max_keys=100_000, count=lambda: counted.append(None), clock=clock
    )
    store = IdempotencyStore(ttl_s=86400, max_keys=1, clock=clock, on_early_eviction=warning)
    with caplog.at_level(logging.WARNING, logger="producers.gateway"):
        for at in (0.0, 10.0, 30.0, 69.0, 75.0):
            clock.now = at
            store.complete(claim(store, key=f"k{at}"), ACCEPTED)

    assert len(counted) == 4
    first, second = [record.getMessage() for record in caplog.records]
    assert first.startswith(
        "the Idempotency-Key store is full (100,000 keys, PIPELINE_GATEWAY__IDEMPOTENCY_MAX_KEYS): "
        "keys are now remembered for only about 10 s instead of 86400 s"
    )
    assert "PIPELINE_GATEWAY__IDEMPOTENCY_STORE=postgres" in first
    assert "about 6 s" in second  # at 75 s, a minute after the first warning (at 10 s)


def test_the_gateway_store_counts_keys_forgotten_early_in_its_metric():
    clock = FakeClock()
    metrics = GatewayMetrics()
    local = local_idempotency(
        ttl_s=60.0, max_keys=1, clock=clock, count_eviction=metrics.keys_evicted.inc
    )
    for key in ("k1", "k2", "k3"):
        claimed = asyncio.run(local.begin("c1", key, BODY))
        assert not isinstance(claimed, Replay | InFlight)
        claimed.complete(ACCEPTED)

    assert b"gateway_idempotency_keys_evicted_total 2.0" in metrics.exposition()


def test_the_fingerprint_ignores_key_order_and_whitespace_but_not_values_or_type():
    same = fingerprint("place_order", {"b": [1, {"y": 2, "x": 1}], "a": "é"})
    assert same == fingerprint("place_order", {"a": "é", "b": [1, {"x": 1, "y": 2}]})
    assert same != fingerprint("place_order", {"a": "é", "b": [1, {"x": 1, "y": 3}]})
    assert same != fingerprint("cancel_order", {"a": "é", "b": [1, {"x": 1, "y": 2}]})


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("9f1c-4a", None),
        ("", "must not be empty"),
        ("x" * 256, "must be at most 255 characters, got 256"),
        ("has space", "must be printable ASCII without spaces"),
        ("clé", "must be printable ASCII without spaces"),
    ],
)
def test_key_problem_explains_what_is_wrong_with_a_key(key, problem):
    assert key_problem(key) == problem


def test_invalid_limits_are_refused_when_made():
    with pytest.raises(ValueError, match="ttl_s must be > 0"):
        IdempotencyStore(ttl_s=0, max_keys=1)
    with pytest.raises(ValueError, match="max_keys must be >= 1"):
        IdempotencyStore(ttl_s=1, max_keys=0)
