"""The gateway while its API keys cannot be read: requests with a key are served for
``keys_max_stale_s`` after the last read, then answered 503 ``keys_unavailable`` (nothing
produced) and ``GET /healthz`` is 503 naming why; ``/metrics`` has when the keys were read.

Requests are mocked aiohttp requests handed to the app's router and middleware (no socket),
after the app's start-up (which reads the keys); time is a fake clock given to the authorizer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from unittest import mock

from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request

from pipeline.settings import GatewaySettings
from producers.gateway import GatewayMetrics, create_app
from producers.gateway.auth import KeyRefresher
from producers.gateway.keys import ApiKey
from tests.support.api_keys import shop_key
from tests.support.gateway_producers import KeepingProducer

MADE, SHOP = shop_key()
SETTINGS = GatewaySettings(rate_per_s=10_000, burst=10_000, keys_max_stale_s=60)
ORDER = {
    "order_id": "order-1",
    "customer_id": "customer-9",
    "lines": [{"sku": "sku-1", "quantity": 2, "unit_price": "12.50"}],
}


class Database:
    def __init__(self) -> None:
        self.down = False

    def __call__(self) -> list[ApiKey]:
        if self.down:
            raise OSError("connection refused")
        return [SHOP]


async def _send(app: web.Application, method: str, path: str, body: bytes = b"") -> web.Response:
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Authorization": f"Bearer {MADE.key}",
    }
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        ("127.0.0.1", 50000) if key == "peername" else default
    )
    payload = StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    match = await app.router.resolve(make_mocked_request(method, path, headers, app=app))
    request = make_mocked_request(
        method,
        path,
        headers,
        app=app,
        match_info=dict(match),
        transport=transport,
        payload=payload,
    )
    [middleware] = app.middlewares
    response = await middleware(request, match.handler)
    assert isinstance(response, web.Response)
    return response


def _answer(response: web.Response) -> tuple[int, Any]:
    assert isinstance(response.body, bytes)
    return response.status, json.loads(response.body)


def test_past_the_bound_a_request_with_a_key_is_503_and_healthz_says_why():
    database, producer, metrics = Database(), KeepingProducer(), GatewayMetrics()
    app = create_app(SETTINGS, producer, keys=database, metrics=metrics)
    [refresher] = [
        getattr(context, "__self__", None)
        for context in app.cleanup_ctx
        if isinstance(getattr(context, "__self__", None), KeyRefresher)
    ]
    now = [1000.0]
    refresher.authorizer.clock = lambda: now[0]
    body = json.dumps(ORDER).encode()

    async def scenario() -> list[tuple[int, Any]]:
        app.freeze()
        await app.startup()  # the first read, at 1000
        try:
            answers = [_answer(await _send(app, "POST", "/v1/requests/place_order", body))]
            database.down = True
            now[0] = 1030.0  # the keys read 30 s ago: still used
            answers.append(_answer(await _send(app, "POST", "/v1/requests/place_order", body)))
            answers.append(_answer(await _send(app, "GET", "/healthz")))
            now[0] = 1061.0  # past keys_max_stale_s
            response = await _send(app, "POST", "/v1/requests/place_order", body)
            answers.append(_answer(response))
            answers.append((0, response.headers.get("Retry-After")))
            answers.append(_answer(await _send(app, "GET", "/healthz")))
            return answers
        finally:
            await app.cleanup()

    before = time.time()
    accepted, kept, healthy, refused, retry_after, unhealthy = asyncio.run(scenario())

    assert accepted[0] == kept[0] == 202
    assert healthy == (200, {"status": "ok"})
    assert refused[0] == 503 and refused[1]["error"]["code"] == "keys_unavailable"
    assert retry_after == (0, "5")
    assert len(producer.sent) == 2  # nothing produced for the refused one
    assert unhealthy[0] == 503 and unhealthy[1]["status"] == "unavailable"
    assert unhealthy[1]["reason"].startswith(
        "the API keys could not be read for 61 s, longer than PIPELINE_GATEWAY__KEYS_MAX_STALE_S"
    )
    assert MADE.key_id not in json.dumps(unhealthy[1])
    read = metrics.registry.get_sample_value("gateway_api_keys_last_read_timestamp_seconds")
    assert read is not None and before - 60 <= read <= time.time()
    assert (
        metrics.registry.get_sample_value(
            "gateway_rejections_total", {"reason": "keys_unavailable"}
        )
        == 1.0
    )
