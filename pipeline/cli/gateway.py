"""``pipeline gateway``: the HTTP request gateway (``POST /v1/requests/{type}`` -> Kafka).

``pipeline gateway [OPTIONS]`` serves (a group whose callback runs when no sub-command is
named); ``pipeline gateway keys ...`` manages its API keys (:mod:`pipeline.cli.gateway_keys`).

1. read the gateway settings (``PIPELINE_GATEWAY__*``, e.g. ``TRUSTED_PROXIES``: the only
   peers whose ``X-Client-Id`` names the client), with ``--host``/``--port`` on top, and bind
   that address once and let go (a port taken: one line, exit code 2, before the database or
   Kafka is touched; with ``--workers N`` too);
2. read the JWT verification key, if JWT is configured (a file that cannot be read stops here);
   migrate the database, which keeps the API keys (read now and every ``key_refresh_s``) and,
   on PostgreSQL, the Idempotency-Keys shared by every gateway process;
3. build one idempotent producer from the Kafka and producer settings, and a Kafka health
   check for ``GET /healthz`` (an admin client's metadata request with the same settings,
   which also finds a request topic deleted while the gateway runs);
4. serve until Ctrl-C or SIGTERM, then say what stopping waits for, and wait at most
   ``produce_timeout_s``: stop accepting, let requests in flight get their acknowledgement,
   wait for the producer's remaining deliveries. Messages still undelivered then are an error
   (exit code 2); a second Ctrl-C or SIGTERM stops at once (exit code 130), saying how many
   messages were given up.

With ``--workers N`` the command supervises N such processes on one port instead
(:mod:`producers.gateway.workers`), and the gateway's start-up notes come once: the database
from the supervisor, whether the gateway is open (or its keys) from the first worker.
aiohttp, SQLAlchemy, the producer and the gateway are imported by the command itself:
``pipeline --help`` needs only its signature.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

import typer

from pipeline.cli import gateway_keys
from pipeline.cli.checks import host_name
from pipeline.cli.console import stderr_console
from pipeline.cli.process import announce_database
from pipeline.errors import PipelineError
from pipeline.settings import GatewaySettings, PipelineSettings, gateway_timeout_problem

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from producers.gateway.shared_idempotency import PostgresIdempotency

EXIT_INTERRUPTED = 130

# The sub-command is optional: without one the group's callback serves.
app = typer.Typer(subcommand_metavar="[COMMAND [ARGS]...]")
app.add_typer(gateway_keys.app, name="keys")


@app.callback(invoke_without_command=True)
def gateway(
    ctx: typer.Context,
    host: str | None = typer.Option(
        None,
        "--host",
        help="Address to listen on (default: PIPELINE_GATEWAY__HOST, else 127.0.0.1; "
        "0.0.0.0 for every interface).",
        callback=host_name,
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        min=1,
        max=65535,
        help="Port to listen on (default: PIPELINE_GATEWAY__PORT, else 8080).",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Gateway processes sharing the port (SO_REUSEPORT); more than 1 needs "
        "PostgreSQL (PIPELINE_DATABASE__URL) for the shared Idempotency-Keys.",
    ),
    worker: bool = typer.Option(False, "--worker", hidden=True),
    announce: bool = typer.Option(False, "--announce", hidden=True),
) -> None:
    """Serve the HTTP request gateway: POST /v1/requests/{type} produces each request to its
    topic: place_order to requests.orders, cancel_order to requests.orders,
    register_customer to requests.customers.

    Once an API key exists (pipeline gateway keys add), every request needs one
    (Authorization: Bearer <key>): 401 without a valid key, 403 for a request type the key
    may not send; keys added or revoked take effect within PIPELINE_GATEWAY__KEY_REFRESH_S
    (5 s). Without any key the gateway is open, and says so when it starts.

    With PIPELINE_GATEWAY__JWT__* set (issuer, audience, algorithms, and a secret, a PEM
    public key file or a JWKS file), JWT bearer tokens are accepted too: their signature,
    exp/nbf/iat, iss and aud are checked (401), and their scope claim names the request types
    they may send as requests:<type> (403).

    Each client is rate-limited by its key, else by its address; X-Client-Id is ignored,
    except from the reverse proxies listed in PIPELINE_GATEWAY__TRUSTED_PROXIES
    (a JSON list of addresses or CIDR networks, e.g. '["10.0.0.0/8"]') of an open gateway.

    GET /healthz answers 503, with the reason, while Kafka does not answer or one of
    these topics does not exist; requests are then answered 503 at once. A Kafka that
    refuses its login or TLS handshake at the start, or lacks one of these topics, is
    one line and exit code 2 (create the topics with pipeline topics apply).

    Ctrl-C or SIGTERM stops: the gateway says how many messages it waits for and waits up
    to PIPELINE_GATEWAY__PRODUCE_TIMEOUT_S (30 s) for them to be delivered to Kafka (exit code
    2 if some were not); a second Ctrl-C stops at once (exit code 130).

    Examples:
      pipeline gateway --port 8080
      curl -i localhost:8080/v1/requests/place_order -H 'Idempotency-Key: o-17' --json @order.json
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    overrides = {
        name: value for name, value in (("host", host), ("port", port)) if value is not None
    }
    config = GatewaySettings.model_validate({**settings.gateway.model_dump(), **overrides})
    problem = gateway_timeout_problem(settings.producer, config)
    if problem is not None:
        raise PipelineError(f"invalid setting: {problem}")
    if not worker:  # the supervisor checked for its workers
        from pipeline.logs import configure_logging
        from producers.gateway.workers import check_address

        # Before the checks: their error, a missing topic say, is then a log line like the
        # program's others (JSON with a JSON console, and on the logs topic).
        # SIGTERM: the supervisor's and the server's own (a worker stopped before it serves
        # ends at once, as its supervisor expects).
        configure_logging(settings, "gateway", flush_on_sigterm=False)
        # A port taken is one line before anything else is done, one gateway or --workers N:
        # no database line, no migration (nor a new SQLite file), no wait for Kafka.
        check_address(config.host, config.port)
        _check_kafka(settings)
    if workers > 1:
        _supervise(settings, config, workers)
    else:
        # A worker (--worker) says none of the gateway's start-up notes unless --announce (the
        # first one): the supervisor said the database, one worker says what the keys make of it.
        _serve(settings, config, worker=worker, announce=announce or not worker)


#: How long the start waits for Kafka's first answer before it starts without one.
_FIRST_ANSWER_S = 5.0


def request_topics() -> list[str]:
    """The topics the gateway's request types are produced to, each once."""
    from pipeline.request_types import REQUEST_TYPES

    return sorted({request_type.topic for request_type in REQUEST_TYPES.values()})


def _check_kafka(settings: PipelineSettings) -> None:
    """A one-line error (exit code 2) when Kafka answers but refuses the gateway's login or TLS
    handshake, or lacks a topic the request types are produced to, as `pipeline process` says
    it: neither mends by waiting (every request waited 30 s for a 503 that said to retry). A
    Kafka that does not answer is not refused: the gateway starts, and /healthz says 503 until
    it answers."""
    from pipeline.kafka.clients import build_admin
    from pipeline.topics.admin import (
        KafkaRefusedError,
        MissingTopicsError,
        describe_cluster_topics,
    )

    bootstrap = settings.kafka.bootstrap_servers
    topics = request_topics()
    try:
        found = describe_cluster_topics(
            build_admin(settings.kafka), topics, bootstrap=bootstrap, timeout_s=_FIRST_ANSWER_S
        )
    except KafkaRefusedError:
        raise
    except PipelineError:
        return
    missing = [topic for topic in topics if topic not in found]
    if missing:
        raise MissingTopicsError(missing, bootstrap)


def _migrated_engine(settings: PipelineSettings, *, announce: bool = True) -> Engine:
    from pipeline.database import build_engine, create_sqlite_folder, migrate

    if announce:
        announce_database(settings)
    create_sqlite_folder(settings.database, settings.stack.home)
    engine = build_engine(settings.database)
    migrate(engine)
    return engine


def _names_postgres(url: str) -> bool:
    """Whether the database URL is PostgreSQL's (one that does not read is left to the engine
    to refuse, in its own words)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).get_backend_name() == "postgresql"
    except ArgumentError:
        return True


def _supervise(settings: PipelineSettings, config: GatewaySettings, workers: int) -> None:
    from pipeline.cli.child_processes import dying_with_this_process
    from producers.gateway.tokens import load_token_verifier
    from producers.gateway.workers import run_workers

    # Logging is set up (by the command, before its Kafka check): its own lines (the database,
    # the workers started, stopping, an error it stops with) are as every program's.
    if config.jwt is not None:  # a key file that cannot be read: one line, before any worker
        load_token_verifier(config.jwt)
    # Refused from the URL, before the database is touched (an SQLite file was made first).
    if not _names_postgres(settings.database.url) or config.idempotency_store == "memory":
        raise PipelineError(
            f"--workers {workers} needs the Idempotency-Key store shared in PostgreSQL: set "
            "PIPELINE_DATABASE__URL to a postgresql+psycopg:// URL (and "
            "PIPELINE_GATEWAY__IDEMPOTENCY_STORE to auto or postgres)"
        )
    _migrated_engine(settings).dispose()  # once, before the workers start
    err = stderr_console()
    argv = [
        sys.executable,
        "-c",
        # A worker ends with the supervisor: killed with SIGKILL, it left its workers serving.
        dying_with_this_process("from pipeline.cli.main import run; run()"),
        "gateway",
        "--host",
        config.host,
        "--port",
        str(config.port),
        "--worker",
    ]
    try:
        code = run_workers(
            argv,
            workers,
            address=(config.host, config.port),
            say=lambda line: err.print(line, highlight=False),
            first_args=["--announce"],  # the one worker that says the gateway's start-up notes
        )
    finally:
        _signals_ignored_from_now()
    if code:
        raise typer.Exit(code)


def shared_idempotency_store(
    settings: PipelineSettings, config: GatewaySettings, engine: Engine
) -> PostgresIdempotency | None:
    """The Idempotency-Key store shared in PostgreSQL, as every gateway process builds it
    (``None``: this process's memory); also used by bench/gateway_load.py."""
    from pipeline.database import is_postgres
    from producers.gateway.shared_idempotency import PostgresIdempotency

    if config.idempotency_store == "memory":
        return None
    if not is_postgres(engine):
        if config.idempotency_store == "postgres":
            raise PipelineError(
                "gateway.idempotency_store is postgres but database.url is not PostgreSQL"
            )
        return None
    return PostgresIdempotency(
        engine,
        ttl_s=config.idempotency_ttl_s,
        # A claim is settled by the delivery report, at the latest after librdkafka's delivery
        # timeout; a gateway that died holding one frees it a little after that.
        claim_lease_s=settings.producer.delivery_timeout_ms / 1000 + config.produce_timeout_s,
        wait_s=config.produce_timeout_s,
    )


def _serve(
    settings: PipelineSettings, config: GatewaySettings, *, worker: bool, announce: bool
) -> None:
    """Serve in this process; ``worker``: one of ``--workers`` (``SO_REUSEPORT``, and the
    supervisor said the database); ``announce``: say whether the gateway is open."""
    from functools import partial

    from pipeline.kafka.clients import build_admin
    from pipeline.kafka.producer import build_event_producer
    from pipeline.logs import configure_logging
    from pipeline.topics.admin import not_answering_text
    from producers.gateway import KafkaHealth, StoppedAtOnce, create_app, serve
    from producers.gateway.key_table import load_keys
    from producers.gateway.server import run_event_loop
    from producers.gateway.tokens import load_token_verifier

    log_handler = configure_logging(settings, "gateway", flush_on_sigterm=False)
    err = stderr_console()
    tokens = None if config.jwt is None else load_token_verifier(config.jwt)
    engine = _migrated_engine(settings, announce=not worker)
    store = shared_idempotency_store(settings, config, engine)
    bootstrap = settings.kafka.bootstrap_servers
    admin = build_admin(settings.kafka)
    health = KafkaHealth(
        admin.list_topics,
        bootstrap=bootstrap,
        refusal=admin.take_security_failure,
        # Where something listens but says nothing: the security protocol to check, as every
        # command says it (a PLAINTEXT gateway at a SASL_SSL listener only "did not answer").
        not_answering=partial(
            not_answering_text, bootstrap, protocol=settings.kafka.security_protocol
        ),
        # A topic deleted while the gateway runs: /healthz names it, and its requests are
        # refused at once.
        topics=request_topics(),
    )
    # Not a `with` block: its exit would wait for every delivery once more, with no bound a
    # second Ctrl-C could cut; serve() waits for them, bounded, and says so.
    producer = build_event_producer(settings.kafka, settings.producer)
    app = create_app(
        config,
        producer,
        kafka_health=health,
        keys=partial(load_keys, engine),
        key_refresh_s=config.key_refresh_s,
        idempotency=store,
        tokens=tokens,
        announce=announce,
    )
    if store is not None:
        app.cleanup_ctx.append(store.lifetime)
    try:
        run_event_loop(
            serve(
                app,
                config.host,
                config.port,
                shutdown_timeout_s=config.produce_timeout_s,
                producer=producer,
                say=lambda line: err.print(line, highlight=False),
                reuse_port=worker,
                header_timeout_s=config.header_timeout_s,
            )
        )
    except StoppedAtOnce as stopped:
        err.print(str(stopped), highlight=False)
        if log_handler is not None:  # at once: log lines Kafka has not taken are not waited for
            log_handler.flush_timeout_s = 0.0
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        _signals_ignored_from_now()  # as while the loop closed (serve())
        engine.dispose()


def _signals_ignored_from_now() -> None:
    """The gateway (or its supervisor) has stopped: a signal now changes nothing until the
    process ends. With the default action back, a second SIGTERM in these last moments ended
    a clean stop with 143 instead of its own exit code."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
