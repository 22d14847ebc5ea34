"""Headers the gateway takes once (``Authorization``, ``X-Correlation-Id``, ``X-Client-Id``,
``traceparent``, as ``Idempotency-Key``): a repeat is 400, never the first one taken; and
requests without valid credentials limited by their address's token bucket (429 once it is
empty), with or without ``Expect: 100-continue``.

Mocked aiohttp requests (no socket) through the app's router, expect handler and middleware,
from one peer, over a stub producer that acknowledges every event at once and keeps it; the
keyed gateway is started (its keys read) by an :class:`aiohttp.web.AppRunner`, which listens
on nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from unittest import mock

from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request

from pipeline.settings import GatewaySettings
from producers.gateway import create_app
from producers.gateway.keys import ApiKey
from tests.support.api_keys import shop_key
from tests.support.gateway_producers import KeepingProducer

PEER = "192.0.2.7"
SETTINGS = GatewaySettings(rate_per_s=1, burst=3)
LINES = [{"sku": "s-1", "quantity": 1, "unit_price": "9.90"}]
ORDER = json.dumps({"order_id": "o-1", "customer_id": "c-9", "lines": LINES}).encode()
MADE, SHOP = shop_key()
TRACEPARENTS = (
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01",
)
T = TypeVar("T")


class Gateway:
    """The app, started (its keys read) while :meth:`run` runs a scenario."""

    def __init__(self, *keys: ApiKey, settings: GatewaySettings = SETTINGS) -> None:
        self.producer = KeepingProducer()
        self.settings = settings
        self.app = create_app(
            settings,
            self.producer,
            clock=lambda: 0.0,  # no token comes back during a test
            keys=(lambda: list(keys)) if keys else None,
            announce=False,
        )

    def run(self, scenario: Callable[[], Awaitable[T]]) -> T:
        async def started() -> T:
            runner = web.AppRunner(self.app)
            await runner.setup()
            try:
                return await scenario()
            finally:
                await runner.cleanup()

        return asyncio.run(started())

    def _request(self, headers: list[tuple[str, str]], body: bytes, **options: Any) -> web.Request:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda key, default=None: (
            (PEER, 50000) if key == "peername" else default
        )
        payload = StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
        payload.feed_data(body)
        payload.feed_eof()
        all_headers = [
            ("Content-Type", "application/json"),
            *headers,
            ("Content-Length", str(len(body))),
        ]
        return make_mocked_request(
            "POST", "/v1/requests/place_order", all_headers, app=self.app, transport=transport,
            payload=payload, client_max_size=self.settings.max_body_bytes, **options,
        )  # fmt: skip

    async def post(self, *headers: tuple[str, str], body: bytes = ORDER) -> tuple[int, Any, Any]:
        """The answer without ``Expect``: status, headers, JSON body."""
        match = await self.app.router.resolve(self._request([], b""))
        request = self._request(list(headers), body, match_info=dict(match))
        [middleware] = self.app.middlewares
        response = await middleware(request, match.handler)
        assert isinstance(response, web.Response) and isinstance(response.body, bytes)
        return response.status, response.headers, json.loads(response.body)

    async def expect(self, *headers: tuple[str, str]) -> tuple[int, Any, bool]:
        """The expect handler's answer to ``Expect: 100-continue`` (``100`` when it lets the
        body come), its JSON body, and whether ``100 Continue`` was written."""
        match = await self.app.router.resolve(self._request([], b""))
        writer = mock.Mock()
        writer.write = mock.AsyncMock()
        request = self._request(
            [("Expect", "100-continue"), *headers], ORDER, match_info=dict(match), writer=writer
        )
        refused = await match.expect_handler(request)
        continued = mock.call(b"HTTP/1.1 100 Continue\r\n\r\n") in writer.write.call_args_list
        if refused is None:
            return 100, None, continued
        assert isinstance(refused, web.Response) and isinstance(refused.body, bytes)
        return refused.status, json.loads(refused.body), continued


def key(value: str = MADE.key) -> tuple[str, str]:
    return ("Authorization", f"Bearer {value}")


# ---- repeated headers --------------------------------------------------------------------------


def test_a_repeated_correlation_id_or_traceparent_is_400_and_produces_nothing():
    gateway = Gateway()

    async def scenario() -> list[tuple[int, Any, Any]]:
        return [
            await gateway.post(("X-Correlation-Id", "a"), ("X-Correlation-Id", "b")),
            await gateway.post(("traceparent", TRACEPARENTS[0]), ("traceparent", TRACEPARENTS[1])),
        ]

    correlation, trace = gateway.run(scenario)

    assert correlation[0] == 400
    assert correlation[2]["error"] == {
        "code": "invalid_header",
        "message": "X-Correlation-Id given 2 times: send it once",
        "details": [{"field": "X-Correlation-Id", "message": "repeated"}],
    }
    assert trace[0] == 400
    assert trace[2]["error"]["message"] == "traceparent given 2 times: send it once"
    assert gateway.producer.sent == []


def test_each_header_given_once_is_carried_into_the_event():
    gateway = Gateway()

    async def scenario() -> tuple[int, Any, Any]:
        return await gateway.post(("X-Correlation-Id", "a"), ("traceparent", TRACEPARENTS[0]))

    assert gateway.run(scenario)[0] == 202
    [(_, event)] = gateway.producer.sent
    assert (event.correlationid, event.traceparent) == ("a", TRACEPARENTS[0])


def test_a_repeated_x_client_id_from_a_trusted_proxy_is_400():
    gateway = Gateway(settings=SETTINGS.model_copy(update={"trusted_proxies": [PEER]}))

    async def scenario() -> tuple[int, Any, Any]:
        return await gateway.post(("X-Client-Id", "c-1"), ("X-Client-Id", "c-2"))

    status, _, said = gateway.run(scenario)

    assert (status, said["error"]["message"]) == (400, "X-Client-Id given 2 times: send it once")
    assert gateway.producer.sent == []


def test_a_repeated_authorization_is_400_whichever_comes_first_with_or_without_expect():
    gateway = Gateway(SHOP)

    async def scenario() -> list[tuple[int, Any]]:
        valid_first = await gateway.post(key(), key("pgk_nope"))
        invalid_first = await gateway.post(key("pgk_nope"), key())
        expected = await gateway.expect(key(), key("pgk_nope"))
        return [valid_first[::2], invalid_first[::2], expected[:2]]

    answers = gateway.run(scenario)

    assert [status for status, _ in answers] == [400, 400, 400]
    for _, said in answers:
        assert said["error"]["message"] == "Authorization given 2 times: send it once"
        assert MADE.key not in json.dumps(said)
    assert gateway.producer.sent == []


# ---- requests without valid credentials: the address's bucket ----------------------------------


def test_a_flood_without_valid_credentials_is_429_once_the_address_bucket_is_empty():
    gateway = Gateway(SHOP)

    async def scenario() -> list[tuple[int, Any, Any]]:
        return [await gateway.post() for _ in range(3)] + [
            await gateway.post(key("pgk_nope")) for _ in range(3)
        ]

    answers = gateway.run(scenario)

    assert [status for status, _, _ in answers] == [401, 401, 401, 429, 429, 429]
    _, headers, said = answers[3]
    assert headers["Retry-After"] == "1"
    assert said["error"]["code"] == "rate_limited"
    assert PEER in said["error"]["message"]


def test_the_expect_path_counts_bad_credentials_too_and_a_valid_key_keeps_its_bucket():
    gateway = Gateway(SHOP)

    async def scenario() -> tuple[list[tuple[int, Any, bool]], list[int], tuple[int, Any, bool]]:
        expected = [await gateway.expect(key("pgk_nope")) for _ in range(4)]
        valid = [(await gateway.post(key()))[0] for _ in range(4)]
        return expected, valid, await gateway.expect(key())

    expected, valid, expected_valid = gateway.run(scenario)

    assert [(status, continued) for status, _, continued in expected] == [(401, False)] * 3 + [
        (429, False)
    ]
    assert valid == [202, 202, 202, 429]  # the key's own bucket, untouched by the address's
    assert expected_valid[0] == 100 and expected_valid[2]
    assert len(gateway.producer.sent) == 3
