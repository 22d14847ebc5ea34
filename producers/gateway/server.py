"""Serving the gateway: listen, and on SIGINT or SIGTERM stop in order."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pipeline.errors import PipelineError

__all__ = ["serve"]

log = logging.getLogger("producers.gateway")


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout_s: float = 30.0,
    on_ready: Callable[[list[str]], None] | None = None,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then stop cleanly.

    1. stop accepting connections; 2. let requests in flight finish (up to
    ``shutdown_timeout_s``), so each still gets its acknowledgement; 3. run the app's cleanup
    (delivery reports stop being served). The caller then flushes its producer.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as error:
            raise PipelineError(f"cannot listen on {host}:{port}: {error.strerror}") from None
        addresses = [f"http://{_host_port(address)}" for address in runner.addresses]
        log.info("gateway listening on %s", ", ".join(addresses))
        if on_ready is not None:
            on_ready(addresses)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
        log.info("gateway stopping")
    finally:
        await runner.cleanup()


def _host_port(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
