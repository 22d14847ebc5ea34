"""Bodies through the gateway app: content codings, unreadable bodies, charsets, and a body still
coming when the gateway stops. Mocked aiohttp requests (no socket), a producer that acknowledges
at once."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from unittest import mock

import pytest
from aiohttp import StreamReader, web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_protocol import RequestPayloadError

from pipeline.envelope import Event, KafkaMessage
from pipeline.kafka.producer import Delivery
from pipeline.settings import GatewaySettings
from producers.gateway import create_app
from producers.gateway.body import BODIES_LEFT_ENCODED

SETTINGS = GatewaySettings(rate_per_s=10_000, burst=10_000)
ORDER = json.dumps(
    {"order_id": "o-1", "customer_id": "c-9", "lines": [{"sku": "s", "quantity": 1,
     "unit_price": "1.50"}]}
).encode()  # fmt: skip
PATH = "/v1/requests/place_order"


class StubProducer:
    def __init__(self) -> None:
        self.sent = 0

    def send_awaitable(self, topic: str, event: Event | KafkaMessage) -> asyncio.Future[Delivery]:
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        future.set_result(Delivery(event.id, topic, b"k", 0, self.sent))
        self.sent += 1
        return future

    @asynccontextmanager
    async def serving_on_loop(self) -> AsyncIterator[None]:
        yield


def gateway(*, left_encoded: bool) -> tuple[web.Application, StubProducer]:
    producer = StubProducer()
    app = create_app(SETTINGS, producer)
    if left_encoded:  # as serve() has it: aiohttp leaves bodies as sent
        app[BODIES_LEFT_ENCODED] = True
    app.freeze()
    return app, producer


def payload(body: bytes | None, *, error: BaseException | None = None) -> StreamReader:
    """A request body as aiohttp reads it: whole, still coming (``None``), or failing."""
    stream = StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
    if error is not None:
        stream.set_exception(error)
    elif body is not None:
        stream.feed_data(body)
        stream.feed_eof()
    return stream


async def post(
    app: web.Application, body: StreamReader, headers: dict[str, str], length: int = 10
) -> web.Response:
    all_headers = {"Content-Type": "application/json", "Content-Length": str(length), **headers}
    probe = make_mocked_request("POST", PATH, all_headers, app=app)
    match = await app.router.resolve(probe)
    request = make_mocked_request(
        "POST", PATH, all_headers, app=app, match_info=dict(match), payload=body,
        client_max_size=SETTINGS.max_body_bytes,
    )  # fmt: skip
    [middleware] = app.middlewares
    response = await middleware(request, match.handler)
    assert isinstance(response, web.Response)
    return response


def error_of(response: web.Response) -> dict[str, str]:
    assert isinstance(response.body, bytes)
    error: dict[str, str] = json.loads(response.body)["error"]
    return error


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def test_a_body_that_is_not_valid_gzip_is_400_logged_at_debug_only(logs):
    async def scenario() -> tuple[web.Response, int]:
        app, producer = gateway(left_encoded=True)
        response = await post(app, payload(b"not gzip"), {"Content-Encoding": "gzip"})
        return response, producer.sent

    response, sent = asyncio.run(scenario())

    assert (response.status, error_of(response)["code"], sent) == (400, "invalid_body", 0)
    assert error_of(response)["message"].startswith("the body is not valid gzip")
    assert [r for r in logs.records if r.levelno >= logging.INFO] == []
    [line] = [r.getMessage() for r in logs.records if r.name == "producers.gateway"]
    assert "-> 400 invalid_body" in line


def test_a_body_aiohttp_could_not_decode_is_400_not_500(logs):
    failed = RequestPayloadError("400, message: Can not decode content-encoding: deflate")
    failed.__cause__ = ContentEncodingError("Can not decode content-encoding: deflate")

    async def scenario() -> web.Response:
        app, _ = gateway(left_encoded=False)  # aiohttp's default runner decodes bodies
        return await post(app, payload(None, error=failed), {"Content-Encoding": "deflate"})

    response = asyncio.run(scenario())

    assert (response.status, error_of(response)["code"]) == (400, "invalid_body")
    assert error_of(response)["message"] == (
        "the body is not valid deflate (Content-Encoding: deflate)"
    )
    assert [r for r in logs.records if r.levelno >= logging.INFO] == []


def test_a_transfer_coding_besides_chunked_is_501_and_chunked_alone_is_taken():
    # "gzip, chunked" was read as chunked with its gzip left on (a 422), where a proxy in front
    # may have framed it otherwise; RFC 9112 wants 501 for a coding not implemented.
    async def scenario() -> list[tuple[int, str | None, int]]:
        found = []
        for coding in ("gzip, chunked", "chunked, chunked, compress", "chunked"):
            app, producer = gateway(left_encoded=True)
            response = await post(app, payload(ORDER), {"Transfer-Encoding": coding})
            code = error_of(response)["code"] if response.status >= 400 else None
            found.append((response.status, code, producer.sent))
        return found

    assert asyncio.run(scenario()) == [
        (501, "unsupported_transfer_coding", 0),
        (501, "unsupported_transfer_coding", 0),
        (202, None, 1),
    ]


def test_a_gzip_body_and_an_ascii_one_are_accepted():
    async def scenario() -> list[int]:
        app, _ = gateway(left_encoded=True)
        zipped = await post(app, payload(gzip.compress(ORDER)), {"Content-Encoding": "gzip"})
        ascii_ = await post(
            app, payload(ORDER), {"Content-Type": "application/json; charset=us-ascii"}
        )
        return [zipped.status, ascii_.status]

    assert asyncio.run(scenario()) == [202, 202]


@pytest.mark.parametrize("coding", ["br", "foo"])
def test_an_unsupported_coding_is_415_json_with_accept_encoding(coding):
    async def scenario() -> tuple[web.Response, int]:
        app, producer = gateway(left_encoded=True)
        response = await post(app, payload(ORDER), {"Content-Encoding": coding})
        return response, producer.sent

    response, sent = asyncio.run(scenario())

    assert (response.status, error_of(response)["code"], sent) == (415, "unsupported_encoding", 0)
    assert response.headers["Accept-Encoding"] == "gzip, deflate"


def test_a_body_still_coming_when_the_gateway_stops_is_answered_503_at_once():
    async def scenario() -> tuple[web.Response, web.Response, float]:
        app, _ = gateway(left_encoded=True)
        loop = asyncio.get_running_loop()
        waiting = asyncio.create_task(post(app, payload(None), {}))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # its body is awaited
        started = loop.time()
        await app.shutdown()  # aiohttp's on_shutdown, as the runner stops
        first = await asyncio.wait_for(waiting, 5)
        late = await asyncio.wait_for(post(app, payload(None), {}), 5)  # came while stopping
        return first, late, loop.time() - started

    first, late, waited_s = asyncio.run(scenario())

    for response in (first, late):
        assert (response.status, error_of(response)["code"]) == (503, "shutting_down")
        assert response.headers["Retry-After"] == "1"
        assert response.keep_alive is False  # the rest of the body is not read: closed
    assert waited_s < 1


def test_a_body_already_arrived_when_the_gateway_stops_is_answered_as_usual():
    async def scenario() -> int:
        app, _ = gateway(left_encoded=True)
        await app.shutdown()
        return (await post(app, payload(ORDER), {})).status

    assert asyncio.run(scenario()) == 202


def test_a_body_that_does_not_arrive_in_time_is_408_and_closes(logs):
    # A stalled client, or chunked framing broken after the headers (aiohttp's reader then
    # waits without an error), held the request until the client gave up.
    async def scenario() -> web.Response:
        producer = StubProducer()
        app = create_app(
            GatewaySettings(rate_per_s=10_000, burst=10_000, body_timeout_s=0.2), producer
        )
        app.freeze()
        return await asyncio.wait_for(post(app, payload(None), {}), 5)

    response = asyncio.run(scenario())

    assert (response.status, error_of(response)["code"]) == (408, "request_timeout")
    assert "PIPELINE_GATEWAY__BODY_TIMEOUT_S" in error_of(response)["message"]
    assert response.keep_alive is False
    assert not [r for r in logs.records if r.levelno >= logging.ERROR]


def test_a_client_gone_before_its_body_ended_is_a_refusal_not_a_server_error(logs):
    # "Connection lost" came as an ERROR with its traceback, and counted as a 500.
    async def scenario() -> web.Response:
        app, _ = gateway(left_encoded=True)
        return await post(app, payload(None, error=ConnectionResetError("Connection lost")), {})

    response = asyncio.run(scenario())

    assert (response.status, error_of(response)["code"]) == (400, "incomplete_body")
    assert not [r for r in logs.records if r.levelno >= logging.WARNING]
