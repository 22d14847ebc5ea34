"""The gateway's event loop (uvloop where it is installed), its malformed-request log lines, and
the deadline for a request's headers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from pipeline.settings import GatewaySettings
from producers.gateway import GatewayMetrics, create_app
from producers.gateway.server import gateway_runner, quiet_malformed_requests, run_event_loop

T = TypeVar("T")


def test_the_gateway_runs_on_uvloop_where_it_is_installed():
    pytest.importorskip("uvloop")

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_event_loop(loop_module()).startswith("uvloop")


def _server_record(error: BaseException | None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord(
        "aiohttp.server", logging.ERROR, "web_protocol.py", 1, "Error handling request", (),
        exc_info,
    )  # fmt: skip


def test_a_malformed_request_is_one_debug_line_naming_the_error_without_the_request(caplog):
    quiet_malformed_requests()
    quiet_malformed_requests()  # installed once
    server_log = logging.getLogger("aiohttp.server")
    line_too_long = LineTooLong(b"Bearer pgk_secret_token", 8190)

    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        server_log.handle(_server_record(line_too_long))
    with caplog.at_level(logging.INFO, logger="aiohttp.server"):
        server_log.handle(_server_record(line_too_long))  # not shown at the default level
        server_log.handle(_server_record(RuntimeError("a bug of ours")))  # shown as it was

    assert len([f for f in server_log.filters if type(f).__name__ == "_MalformedRequests"]) == 1
    [(debug, level_1), (bug, level_2)] = [(r.getMessage(), r.levelno) for r in caplog.records]
    assert (debug, level_1) == ("rejected a malformed HTTP request (LineTooLong)", logging.DEBUG)
    assert (bug, level_2) == ("Error handling request", logging.ERROR)
    assert "secret" not in caplog.text


# ---- a deadline for a request's headers (over a Unix socket: unit tests have no network) ------


class _Producer:
    def send_awaitable(self, topic: str, event: Any) -> asyncio.Future[Any]:
        raise AssertionError("nothing is produced in these tests")

    @asynccontextmanager
    async def serving_on_loop(self) -> AsyncIterator[None]:
        yield


async def _served(
    path: Path, metrics: GatewayMetrics, talk: Callable[[], Awaitable[T]], timeout_s: float
) -> T:
    app = create_app(GatewaySettings(), _Producer(), metrics=metrics)
    runner = gateway_runner(app, header_timeout_s=timeout_s)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(path)).start()
        return await asyncio.wait_for(talk(), 30)
    finally:
        await runner.cleanup()


def _rejections(metrics: GatewayMetrics, code: str) -> float | None:
    return metrics.registry.get_sample_value("gateway_rejections_total", {"reason": code})


def test_headers_that_do_not_arrive_in_time_are_408_and_the_connection_closes(tmp_path: Path):
    # A client that sent part of its headers and stalled held the connection 80 s and more
    # (aiohttp closes only idle connections, after an hour), with a 3 s body timeout.
    socket_path, metrics = tmp_path / "gateway.sock", GatewayMetrics()

    async def stall() -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        writer.write(b"POST /v1/requests/place_order HTTP/1.1\r\nHost: gateway\r\nContent-")
        answer = await reader.read()  # to the end: the gateway closes the connection
        writer.close()
        return answer

    answer = asyncio.run(_served(socket_path, metrics, stall, timeout_s=0.2))

    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Connection: close" in head
    assert json.loads(body) == {
        "error": {
            "code": "request_timeout",
            "message": "the request's headers did not arrive whole within 0.2 s; nothing was "
            "produced",
            "details": [],
        }
    }
    assert _rejections(metrics, "request_timeout") == 1.0


def test_headers_sent_with_the_connection_get_their_408_too(tmp_path: Path):
    # Bytes that came before the connection's handler waited for a request were not seen as
    # a request's start: about half of such connections were closed without a word.
    socket_path, metrics = tmp_path / "gateway.sock", GatewayMetrics()
    partial = b"POST /v1/requests/place_order HTTP/1.1\r\nHost: gateway\r\n"

    async def stall() -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        writer.write(partial)
        answer = await reader.read()
        writer.close()
        return answer

    async def stall_many() -> list[bytes]:
        return list(await asyncio.gather(*(stall() for _ in range(12))))

    # On the gateway's own loop (uvloop where installed), where the bytes come with the
    # connection, before its handler waits for a request.
    answers = run_event_loop(_served(socket_path, metrics, stall_many, timeout_s=0.3))

    assert [answer[:24] for answer in answers] == [b"HTTP/1.1 408 Request Tim"] * 12
    assert _rejections(metrics, "request_timeout") == 12.0


def test_a_connection_that_sends_nothing_is_closed_without_a_word(tmp_path: Path):
    socket_path, metrics = tmp_path / "gateway.sock", GatewayMetrics()

    async def say_nothing() -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        answer = await reader.read()
        writer.close()
        return answer

    assert asyncio.run(_served(socket_path, metrics, say_nothing, timeout_s=0.2)) == b""
    assert _rejections(metrics, "request_timeout") is None


def test_a_kept_alive_connection_idle_between_whole_requests_is_not_cut(tmp_path: Path):
    socket_path, metrics = tmp_path / "gateway.sock", GatewayMetrics()
    get = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"

    async def two_requests_apart() -> list[bytes]:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        heads = []
        for _ in range(2):
            writer.write(get)
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            await reader.readexactly(int(heads[-1].split(b"Content-Length: ")[1].split(b"\r")[0]))
            await asyncio.sleep(0.5)  # idle longer than the header timeout: no request awaited
        writer.close()
        return heads

    heads = asyncio.run(_served(socket_path, metrics, two_requests_apart, timeout_s=0.2))

    assert [head.split(b"\r\n", 1)[0] for head in heads] == [b"HTTP/1.1 200 OK"] * 2
