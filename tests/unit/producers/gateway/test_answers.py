"""The answers for a key whose first request has no answer yet (409) and for a shared store
that cannot be asked (503): what they say is what is known, and Retry-After matches it."""

from __future__ import annotations

import json

from producers.gateway.answers import still_in_flight, store_unavailable
from producers.gateway.idempotency import IdempotencyStore


def _message(answer) -> str:
    return json.loads(answer.body())["error"]["message"]


def test_a_claim_that_expires_says_when_and_retry_after_is_that_moment():
    answer = still_in_flight(claimed_s_ago=30.4, expires_in_s=119.2)

    assert (answer.status, answer.code) == (409, "request_in_flight")
    assert answer.headers == {"Retry-After": "120"}
    message = _message(answer)
    assert "was claimed 30 s ago and has no answer yet" in message
    assert "the claim expires in 120 s, after which a retry is handled anew" in message
    assert "none in" not in message  # no claim that Kafka was asked and did not answer


def test_a_claim_past_its_expiry_says_retry_in_a_second():
    assert still_in_flight(claimed_s_ago=150.0, expires_in_s=-0.5).headers == {"Retry-After": "1"}


def test_a_claim_of_this_process_is_waiting_for_kafka():
    answer = still_in_flight(claimed_s_ago=31.0, expires_in_s=None)

    assert answer.headers == {"Retry-After": "1"}
    assert "claimed 31 s ago by this gateway process" in _message(answer)
    assert "still waiting for Kafka's acknowledgement" in _message(answer)


def test_the_store_unavailable_503_says_nothing_was_produced_and_when_to_retry():
    answer = store_unavailable("the Idempotency-Key store cannot be used: connection refused")

    assert (answer.status, answer.code) == (503, "idempotency_unavailable")
    assert answer.headers == {"Retry-After": "5"}
    assert "nothing was produced" in _message(answer)


def test_the_memory_store_says_how_long_ago_a_key_in_flight_was_claimed():
    now = [100.0]
    store = IdempotencyStore(ttl_s=60, max_keys=10, clock=lambda: now[0])
    store.begin("client", "key", "fp")
    now[0] = 112.5

    waiting = store.begin("client", "key", "fp")

    assert (waiting.claimed_s_ago, waiting.expires_in_s) == (12.5, None)
