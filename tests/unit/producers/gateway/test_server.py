"""The gateway's event loop: uvloop where it is installed."""

from __future__ import annotations

import asyncio

import pytest

from producers.gateway.server import run_event_loop


def test_the_gateway_runs_on_uvloop_where_it_is_installed():
    pytest.importorskip("uvloop")

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_event_loop(loop_module()).startswith("uvloop")
