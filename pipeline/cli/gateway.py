"""``pipeline gateway``: the HTTP request gateway (``POST /v1/requests/{type}`` -> Kafka).

1. read the gateway settings (``PIPELINE_GATEWAY__*``, e.g. ``TRUSTED_PROXIES``: the only
   peers whose ``X-Client-Id`` names the client), with ``--host``/``--port`` on top;
2. build one idempotent producer from the Kafka and producer settings;
3. serve until Ctrl-C or SIGTERM: stop accepting, let requests in flight get their
   acknowledgement, stop serving delivery reports;
4. flush the producer (a failure there is an error with exit code 2).
"""

from __future__ import annotations

import asyncio

import typer

from pipeline.kafka.producer import build_event_producer
from pipeline.logs import configure_logging
from pipeline.settings import GatewaySettings, PipelineSettings
from producers.gateway import create_app, serve


def gateway(
    ctx: typer.Context,
    host: str | None = typer.Option(
        None,
        "--host",
        help="Address to listen on (default: PIPELINE_GATEWAY__HOST, else 127.0.0.1).",
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        min=1,
        max=65535,
        help="Port to listen on (default: PIPELINE_GATEWAY__PORT, else 8080).",
    ),
) -> None:
    """Serve the HTTP request gateway: POST /v1/requests/{type} produces each request to its
    topic: place_order to requests.orders, cancel_order to requests.orders,
    register_customer to requests.customers.

    Each client is rate-limited by its address; X-Client-Id is ignored,
    except from the reverse proxies listed in PIPELINE_GATEWAY__TRUSTED_PROXIES
    (a JSON list of addresses or CIDR networks, e.g. '["10.0.0.0/8"]').
    """
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    overrides = {
        name: value for name, value in (("host", host), ("port", port)) if value is not None
    }
    config = GatewaySettings.model_validate({**settings.gateway.model_dump(), **overrides})
    configure_logging(settings, "gateway")
    with build_event_producer(settings.kafka, settings.producer) as producer:
        asyncio.run(serve(create_app(config, producer), config.host, config.port))
