"""The answers for a key whose first request has no answer yet (409) and for a shared store
that cannot be asked (503): what they say is what is known, and Retry-After matches it; and
the 409 the app gives for a key another gateway claimed (a mocked aiohttp request, no socket)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Future
from typing import Any
from unittest import mock

from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request

from pipeline.settings import GatewaySettings
from producers.gateway import create_app
from producers.gateway.answers import still_in_flight, store_unavailable
from producers.gateway.idempotency import IdempotencyStore, InFlight, Replay, Settle, StoredAnswer
from tests.support.gateway_producers import KeepingProducer


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


def test_a_claim_of_unknown_age_says_only_when_it_expires():
    # A gateway restarted with another produce timeout said "was claimed 99 s ago" of a key
    # claimed 78.5 s before: the age was worked out from its own lease, not the claimer's.
    answer = still_in_flight(claimed_s_ago=None, expires_in_s=51.3)

    assert answer.headers == {"Retry-After": "52"}
    message = _message(answer)
    assert message.startswith(
        "a request with this Idempotency-Key is being handled and has no answer yet (its "
        "gateway may still be waiting for Kafka's acknowledgement, or may have stopped); the "
        "claim expires in 52 s, after which a retry is handled anew: retry with the same "
        "Idempotency-Key to get its answer"
    )
    assert "ago" not in message


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


class ClaimedElsewhere:
    """A shared store whose every key another gateway claimed, the claim expiring in 52 s (it
    knows no more of the claim: its rows keep when it expires, not when it was made)."""

    async def begin(self, client: str, key: str, fingerprint: str) -> Replay | InFlight | Settle:
        return InFlight(Future[StoredAnswer | None](), expires_in_s=52.0)


def test_the_gateway_answers_a_key_claimed_elsewhere_with_only_what_the_store_knows():
    settings = GatewaySettings(produce_timeout_s=0.01)  # how long it waits for the first
    app = create_app(settings, KeepingProducer(), idempotency=ClaimedElsewhere())
    body = json.dumps(
        {
            "order_id": "o-1",
            "customer_id": "c-9",
            "lines": [{"sku": "s-1", "quantity": 1, "unit_price": "9.90"}],
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": "o-1-attempt",
        "Content-Length": str(len(body)),
    }

    async def scenario() -> tuple[int, Any, Any]:
        path = "/v1/requests/place_order"
        match = await app.router.resolve(make_mocked_request("POST", path, headers, app=app))
        payload = StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
        payload.feed_data(body)
        payload.feed_eof()
        request = make_mocked_request(
            "POST", path, headers, app=app, match_info=dict(match), payload=payload
        )
        [middleware] = app.middlewares
        response = await middleware(request, match.handler)
        assert isinstance(response, web.Response) and isinstance(response.body, bytes)
        return response.status, response.headers, json.loads(response.body)

    status, answer_headers, answer = asyncio.run(scenario())

    assert (status, answer["error"]["code"]) == (409, "request_in_flight")
    assert answer_headers["Retry-After"] == "52"
    assert "is being handled and has no answer yet" in answer["error"]["message"]
    assert "the claim expires in 52 s" in answer["error"]["message"]
    assert "ago" not in answer["error"]["message"]
