"""Bodies as :func:`producers.gateway.server.serve` serves them, over a real socket (port 18505):
aiohttp leaves them as sent, so every content coding is the gateway's to answer, in JSON, and a
body not valid in its coding is no ERROR traceback. A producer stub: nothing reaches Kafka."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from pipeline.envelope import Event, KafkaMessage
from pipeline.kafka.producer import Delivery
from pipeline.settings import GatewaySettings
from producers.gateway import create_app
from producers.gateway.server import serve

PORT = 18505


class StubProducer:
    def send_awaitable(self, topic: str, event: Event | KafkaMessage) -> asyncio.Future[Delivery]:
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        future.set_result(Delivery(event.id, topic, b"k", 0, 0))
        return future

    @asynccontextmanager
    async def serving_on_loop(self) -> AsyncIterator[None]:
        yield

    def flush(self, timeout_s: float | None = None) -> None:
        pass


async def exchange(request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    headers = {}
    while (line := await reader.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    writer.close()
    return int(status_line.split()[1]), headers, body


def raw_post(coding: str, body: bytes) -> bytes:
    return (
        b"POST /v1/requests/place_order HTTP/1.1\r\nHost: gateway\r\n"
        b"Content-Type: application/json\r\nContent-Encoding: %s\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (coding.encode(), len(body), body)
    )


def test_served_bodies_in_an_unknown_or_invalid_coding_are_json_errors_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.DEBUG)

    async def main() -> list[tuple[int, dict[str, str], bytes]]:
        app = create_app(GatewaySettings(), StubProducer())
        ready = asyncio.Event()
        serving = asyncio.create_task(
            serve(app, "127.0.0.1", PORT, on_ready=lambda _: ready.set(), say=lambda _: None)
        )
        await asyncio.wait_for(ready.wait(), 10)
        try:
            return [
                await exchange(raw_post("br", b"{}")),
                await exchange(raw_post("gzip", b"not gzip")),
            ]
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # serve() stops on it, as it would in service
            await asyncio.wait_for(serving, 10)

    (br_status, br_headers, br_body), (gz_status, _, gz_body) = asyncio.run(main())

    assert (br_status, br_headers["content-type"]) == (415, "application/json")
    assert br_headers["accept-encoding"] == "gzip, deflate"
    assert json.loads(br_body)["error"]["code"] == "unsupported_encoding"
    assert (gz_status, json.loads(gz_body)["error"]["code"]) == (400, "invalid_body")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_stalled_body_is_answered_408_and_its_connection_closed_soon_after():
    # The 408 came on time, but aiohttp lingered 10 s more before it closed the connection.
    async def main() -> tuple[bytes, float, float]:
        settings = GatewaySettings(body_timeout_s=1.0)
        app = create_app(settings, StubProducer())
        ready = asyncio.Event()
        serving = asyncio.create_task(
            serve(app, "127.0.0.1", PORT, on_ready=lambda _: ready.set(), say=lambda _: None)
        )
        await asyncio.wait_for(ready.wait(), 10)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
            loop = asyncio.get_running_loop()
            started = loop.time()
            writer.write(raw_post("identity", b'{"order_id": "o-1", "customer_id": "c"}')[:-20])
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            answered = loop.time() - started
            await asyncio.wait_for(reader.read(), 10)  # to the end: the connection closed
            closed = loop.time() - started
            writer.close()
            return status_line, answered, closed
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(serving, 10)

    status_line, answered, closed = asyncio.run(main())

    assert status_line.split()[1] == b"408"
    assert 0.9 < answered < 5
    assert closed - answered < 5  # not aiohttp's 10 s of lingering
