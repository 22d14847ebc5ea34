"""The gateway's event loop: uvloop where it is installed."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp.http_exceptions import LineTooLong

from producers.gateway.server import quiet_malformed_requests, run_event_loop


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
