"""Prometheus metrics over HTTP, for every long-running program (processor, relay, orchestrator).

One function so that each program fails the same way when its port is taken: a
:class:`PipelineError` with one line, not an ``OSError`` traceback.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, start_http_server

from pipeline.errors import PipelineError

__all__ = ["serve_metrics"]


def serve_metrics(registry: CollectorRegistry, port: int) -> Callable[[], None]:
    """Serve ``registry`` on ``port`` (all interfaces) in a daemon thread; returns ``stop``."""
    try:
        server, thread = start_http_server(port, registry=registry)
    except OSError as error:
        raise PipelineError(f"cannot serve metrics on port {port}: {error.strerror}") from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
