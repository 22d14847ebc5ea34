"""``pipeline gateway``: the HTTP request gateway (``POST /v1/requests/{type}`` -> Kafka).

1. read the gateway settings (``PIPELINE_GATEWAY__*``, e.g. ``TRUSTED_PROXIES``: the only
   peers whose ``X-Client-Id`` names the client), with ``--host``/``--port`` on top;
2. build one idempotent producer from the Kafka and producer settings, and a Kafka health
   check for ``GET /healthz`` (an admin client's metadata request with the same settings);
3. serve until Ctrl-C or SIGTERM, then say what stopping waits for, and wait at most
   ``produce_timeout_s``: stop accepting, let requests in flight get their acknowledgement,
   wait for the producer's remaining deliveries. Messages still undelivered then are an error
   (exit code 2); a second Ctrl-C or SIGTERM stops at once (exit code 130), saying how many
   messages were given up.

aiohttp, the producer and the gateway are imported by the command itself: ``pipeline --help``
needs only its signature.
"""

from __future__ import annotations

import asyncio

import typer

from pipeline.cli.console import stderr_console
from pipeline.settings import GatewaySettings, PipelineSettings

EXIT_INTERRUPTED = 130


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

    GET /healthz answers 503, with the reason, while Kafka does not answer.

    Ctrl-C or SIGTERM stops: the gateway says how many messages it waits for and waits up
    to PIPELINE_GATEWAY__PRODUCE_TIMEOUT_S (30 s) for them to be delivered to Kafka (exit code
    2 if some were not); a second Ctrl-C stops at once (exit code 130).
    """
    from pipeline.kafka.clients import build_admin
    from pipeline.kafka.producer import build_event_producer
    from pipeline.logs import configure_logging
    from producers.gateway import KafkaHealth, StoppedAtOnce, create_app, serve

    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    overrides = {
        name: value for name, value in (("host", host), ("port", port)) if value is not None
    }
    config = GatewaySettings.model_validate({**settings.gateway.model_dump(), **overrides})
    log_handler = configure_logging(settings, "gateway")
    err = stderr_console()
    bootstrap = settings.kafka.bootstrap_servers
    health = KafkaHealth(build_admin(settings.kafka).list_topics, bootstrap=bootstrap)
    # Not a `with` block: its exit would wait for every delivery once more, with no bound a
    # second Ctrl-C could cut; serve() waits for them, bounded, and says so.
    producer = build_event_producer(settings.kafka, settings.producer)
    app = create_app(config, producer, kafka_health=health)
    try:
        asyncio.run(
            serve(
                app,
                config.host,
                config.port,
                shutdown_timeout_s=config.produce_timeout_s,
                producer=producer,
                say=lambda line: err.print(line, highlight=False),
            )
        )
    except StoppedAtOnce as stopped:
        err.print(str(stopped), highlight=False)
        if log_handler is not None:  # at once: log lines Kafka has not taken are not waited for
            log_handler.flush_timeout_s = 0.0
        raise typer.Exit(EXIT_INTERRUPTED) from None
