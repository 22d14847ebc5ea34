"""The settings of the programs: the gateway, logging and shipping, the outbox relay, the
processors, the saga orchestrator, the demo."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from pipeline.retry import RetryPolicy
from pipeline.settings.base import LIBRDKAFKA_INT_MAX, _Frozen, host_problem
from pipeline.topic_names import kafka_name_problem

#: Signature algorithms a JWT may use: HMAC with a shared secret, or RSA / ECDSA with a public key.
#: ``none`` is not one of them.
JwtAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "ES512",
]  # fmt: skip


def _looks_like_a_key(secret: str) -> bool:
    """Whether ``secret`` is a PEM or SSH key, which PyJWT refuses as an HMAC secret (its own
    checks, and the RFC 4716 form they miss)."""
    from jwt.utils import is_pem_format, is_ssh_key

    data = secret.strip().encode()
    return (
        b"-----BEGIN" in data
        or b"---- BEGIN SSH2" in data
        or is_pem_format(data)
        or is_ssh_key(data)
    )


#: The log producer's ``linger.ms`` (``pipeline.logs.setup``): its records wait at most this long
#: to be batched; ``LogSettings.delivery_timeout_ms`` must be more (librdkafka refuses less).
LOG_LINGER_MS = 50


class JwtSettings(_Frozen):
    """JWT bearer tokens accepted by the gateway (``PIPELINE_GATEWAY__JWT__*``), for clients of
    an identity provider; see :mod:`producers.gateway.tokens`."""

    #: The ``iss`` a token must carry, and its ``aud`` must include ``audience``.
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    #: The algorithms a token may be signed with; set explicitly (``HS*`` with ``secret``,
    #: the others with ``public_key_file`` or ``jwks_file``).
    algorithms: list[JwtAlgorithm] = Field(min_length=1)
    #: The key: exactly one of a shared secret (HS*, at least 32 bytes), a PEM public key file,
    #: or a JWKS file (``{"keys": [...]}``; a token's ``kid`` picks its key).
    secret: SecretStr | None = None
    public_key_file: Path | None = None
    jwks_file: Path | None = None
    #: Clock skew allowed when checking ``exp``, ``nbf`` and ``iat``.
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    #: The claim listing what a token may send (a space-separated string, as OAuth's ``scope``,
    #: or a list); its entries starting with ``scope_prefix`` name request types
    #: (``requests:place_order``), the others are ignored.
    types_claim: str = Field(default="scope", min_length=1)
    scope_prefix: str = "requests:"

    @model_validator(mode="after")
    def _one_key_that_fits_the_algorithms(self) -> JwtSettings:
        sources = [self.secret, self.public_key_file, self.jwks_file]
        if sum(source is not None for source in sources) != 1:
            raise ValueError("set exactly one of secret, public_key_file or jwks_file")
        hmac = [name for name in self.algorithms if name.startswith("HS")]
        if self.secret is not None:
            if len(hmac) != len(self.algorithms):
                raise ValueError("a secret signs HS256/HS384/HS512 tokens only")
            if len(self.secret.get_secret_value().encode()) < 32:
                raise ValueError("the secret must be at least 32 bytes (256 bits)")
            if _looks_like_a_key(self.secret.get_secret_value()):
                # PyJWT refuses a PEM or SSH key as an HMAC secret: every token was a 401
                # blaming its algorithm (and a public key shared as a secret would sign
                # anyone's).
                raise ValueError(
                    "the secret is a PEM or SSH key: an RS256/ES256 public key goes in "
                    "public_key_file, with those algorithms"
                )
        elif hmac:
            raise ValueError(f"{', '.join(hmac)} needs a secret, not a public key")
        return self


class GatewaySettings(_Frozen):
    """The HTTP request gateway (``pipeline gateway``)."""

    #: Not empty: an empty host would listen on every interface (0.0.0.0 and ::); say so.
    host: str = Field(default="127.0.0.1", min_length=1, pattern=r"\S")
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    #: How long a request's body may take to arrive once its headers did (408 past it): a
    #: client that stalls, or framing the HTTP server cannot read on, holds no request longer.
    body_timeout_s: float = Field(default=30.0, gt=0)
    #: How long a request's headers may take, from connecting or from a later request's first
    #: byte (408 and the connection closes past it): a client that never finishes its headers
    #: holds no connection longer.
    header_timeout_s: float = Field(default=30.0, gt=0)
    #: Token bucket per client identity: the peer address, or the ``X-Client-Id`` header when
    #: the peer is one of ``trusted_proxies``.
    rate_per_s: float = Field(default=200.0, gt=0)
    burst: int = Field(default=400, gt=0)
    #: Peers (IP addresses or CIDR networks, e.g. ``["10.0.0.0/8"]``) whose ``X-Client-Id``
    #: header names the client; they must set it themselves, overwriting the client's own.
    #: From any other peer the header is ignored: the client is its address. Default: none.
    trusted_proxies: list[str] = Field(default_factory=list)
    #: How long a response is replayed for a repeated Idempotency-Key, and how many are kept.
    idempotency_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    idempotency_max_keys: int = Field(default=100_000, gt=0)
    #: How long a request waits for Kafka's acknowledgement before answering 503 (and how long
    #: a retry with the same Idempotency-Key waits for the first before answering 409). The
    #: event is not given up then: librdkafka keeps trying for ``producer.delivery_timeout_ms``
    #: and its Idempotency-Key stays claimed until it reports. At most that delivery timeout
    #: (checked by :class:`PipelineSettings`); the defaults are 30 s against 120 s.
    produce_timeout_s: float = Field(default=30.0, gt=0)
    # -- authentication and replicas (``pipeline gateway keys``, ``--workers``) --
    #: How often a running gateway reads the API keys again, so an added or revoked key takes
    #: effect within this time without a restart.
    key_refresh_s: float = Field(default=5.0, gt=0)
    #: How long a gateway that cannot read the API keys (the database away) keeps using the
    #: ones it read last, counted from that read: past it, a request with an API key is 503
    #: ``keys_unavailable`` (and ``/healthz`` 503) until the keys are read again, so a key
    #: revoked meanwhile is refused within it. More than ``key_refresh_s``.
    keys_max_stale_s: float = Field(default=60.0, gt=0)
    #: Where Idempotency-Keys are kept: ``auto`` (in PostgreSQL, shared by every gateway
    #: process, when ``database.url`` is PostgreSQL; else this process's memory), ``memory``
    #: or ``postgres``.
    idempotency_store: Literal["auto", "memory", "postgres"] = "auto"
    #: JWT bearer tokens accepted besides the API keys; none by default.
    jwt: JwtSettings | None = None

    @field_validator("host")
    @classmethod
    def _host_looks_up(cls, value: str) -> str:
        # An empty or overlong label (a..b) was a traceback from the event loop's look-up.
        if (problem := host_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _keys_read_within_their_bound(self) -> GatewaySettings:
        # At or below it, a gateway would refuse every key between two good reads.
        if self.keys_max_stale_s <= self.key_refresh_s:
            raise ValueError(
                f"keys_max_stale_s ({self.keys_max_stale_s:g} s) must be more than "
                f"key_refresh_s ({self.key_refresh_s:g} s): the keys are read only that often"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _ip_networks(cls, value: list[str]) -> list[str]:
        networks = []
        for entry in value:
            try:
                networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"expected IP addresses or CIDR networks, got {entry!r}") from None
        return networks


class LogSettings(_Frozen):
    """Logging of every program (``configure_logging``) and the log shipper (``pipeline logs``)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value  # debug is DEBUG

    #: stderr format: ``json`` (ECS, one object a line), ``text`` (readable), or ``auto``
    #: (text on a terminal, JSON otherwise).
    console: Literal["auto", "json", "text"] = "auto"
    topic: str = "logs"
    #: ``<topic>.dlq``, as every topic's dead letters, unless given.
    dlq_topic: str = "logs.dlq"

    @model_validator(mode="before")
    @classmethod
    def _dead_letters_beside_the_topic(cls, data: Any) -> Any:
        # A logs topic of one's own (PIPELINE_LOGS__TOPIC) had its dead letters sent to the
        # default pipeline's logs.dlq.
        if isinstance(data, dict) and "topic" in data and "dlq_topic" not in data:
            return {**data, "dlq_topic": f"{data['topic']}.dlq"}
        return data

    #: The read alias of the daily log indices (``pipeline.logs.schema.INDEX_ALIAS``); tests
    #: set their own so they never touch the real one.
    index_alias: str = Field(default="pipeline-logs", min_length=1)
    #: The daily indices' primary shards and replicas, set by the index template (which the
    #: shipper puts at every start: settings of one's own there are replaced). 0 replicas fits
    #: one node; give 1 or more on a cluster, or a node lost loses those days' logs.
    index_shards: int = Field(default=1, ge=1, le=1024)
    index_replicas: int = Field(default=0, ge=0, le=32)
    #: An index lifecycle (ILM) policy the daily indices follow (``index.lifecycle.name``),
    #: e.g. one that deletes them after 30 days; none by default (they are kept).
    index_lifecycle_policy: str | None = Field(default=None, min_length=1)
    #: Records held for Kafka by the handler; beyond that they are dropped (counted) to stderr.
    #: Also its producer's ``queue.buffering.max.messages``: at most librdkafka's 2147483647.
    buffer_size: int = Field(default=10_000, gt=0, le=LIBRDKAFKA_INT_MAX)
    #: How long the handler waits for Kafka when flushing at exit.
    flush_timeout_s: float = Field(default=5.0, ge=0)
    #: How long librdkafka keeps trying to deliver one record before it goes to stderr
    #: (``delivery.timeout.ms``: at most 2147483647, and more than the log producer's
    #: ``linger.ms``, :data:`LOG_LINGER_MS`, which librdkafka requires).
    delivery_timeout_ms: int = Field(default=60_000, gt=LOG_LINGER_MS, le=LIBRDKAFKA_INT_MAX)
    shipper_group: str = "pipeline-log-shipper"
    #: How soon the group notices a shipper that died (librdkafka's default is 45 s). At most
    #: the consumer's ``max.poll.interval.ms`` (librdkafka's 300000, which the shipper keeps):
    #: librdkafka refuses a consumer with more.
    shipper_session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    shipper_batch_size: int = Field(default=2_000, gt=0)
    #: How long the shipper waits to fill a batch.
    shipper_batch_timeout_s: float = Field(default=0.5, gt=0)
    #: Attempts for a document Elasticsearch answered 5xx or one index's write block refused,
    #: then it is dead-lettered (a 429 or a block of the whole cluster is an outage waited out).
    retry_attempts: int = Field(default=5, ge=1)
    retry_initial_backoff_s: float = Field(default=0.5, gt=0)
    retry_max_backoff_s: float = Field(default=30.0, gt=0)
    #: Waits between probes while Elasticsearch is unreachable: doubling from the first to the
    #: longest.
    outage_initial_backoff_s: float = Field(default=1.0, gt=0)
    outage_max_backoff_s: float = Field(default=15.0, gt=0)
    metrics_interval_s: float = Field(default=30.0, gt=0)
    #: ``pipeline logs ship`` serves Prometheus metrics here (``--metrics-port``); none unset.
    shipper_metrics_port: int | None = Field(default=None, ge=1, le=65535)


def _default_outbox_routes() -> dict[str, str]:
    return {"order": "orders.events", "payment": "payments.events", "saga": "saga.events"}


class OutboxSettings(_Frozen):
    """The transactional outbox (pipeline/outbox/table.py) and its relay (``pipeline outbox
    relay``)."""

    #: Rows claimed, published and marked together.
    batch_size: int = Field(default=2_000, gt=0, le=1_000_000)
    #: How long an idle relay waits for new rows (a NOTIFY wakes it earlier on PostgreSQL).
    poll_interval_s: float = Field(default=1.0, gt=0)
    #: LISTEN for the NOTIFY sent at each commit of new rows (PostgreSQL only).
    listen: bool = True
    #: Published rows are deleted once they are this old. 0: a row is deleted as it is
    #: published, in the claim's transaction instead of being marked (nothing is kept to look
    #: at afterwards; the database's cheapest way: a DELETE costs it about a third of the
    #: UPDATE that marks, and spares the later delete).
    retention_s: float = Field(default=24 * 3600.0, ge=0)
    #: How often the relay deletes expired rows, and how many per statement.
    cleanup_interval_s: float = Field(default=60.0, gt=0)
    cleanup_batch_size: int = Field(default=10_000, gt=0)
    #: SQLite (and any database without advisory locks): one relay holds a lease this long,
    #: renewing it every batch; another relay takes over when it expires.
    lease_s: float = Field(default=30.0, gt=0)
    #: PostgreSQL: aggregates are hashed to this many advisory locks; two relays never hold
    #: the same one, so one aggregate is only ever published by one relay at a time.
    lock_buckets: int = Field(default=256, gt=0, le=1_000_000)
    #: Topic of an event added without an explicit topic: by event type, else aggregate type.
    routes: dict[str, str] = Field(default_factory=_default_outbox_routes)
    #: A log line with the relay's counts every this many seconds (0: never).
    log_interval_s: float = Field(default=30.0, ge=0)
    #: Serve Prometheus metrics on this port (None: not served).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("routes")
    @classmethod
    def _routes_name_kafka_topics(cls, routes: dict[str, str]) -> dict[str, str]:
        # An empty one is no route (the type is routed as if it had none).
        for name, topic in routes.items():
            problem = kafka_name_problem(topic) if topic else None
            if problem is not None:
                raise ValueError(f"the route of {name!r}: {problem}")
        return routes


class ProcessingSettings(_Frozen):
    """How stream processors consume (``pipeline process``; see pipeline/processing/)."""

    #: Events handled at once across keys (one at a time per key); also the worker threads.
    max_in_flight: int = Field(default=16, ge=1, le=1024)
    #: Events taken from Kafka but not finished before fetching pauses (backpressure).
    max_buffered: int = Field(default=1_000, ge=1)
    retry: RetryPolicy = RetryPolicy()
    #: Group commit for synchronous handlers: events handled together run one after another
    #: in one transaction (one inbox look-up, one insert, one commit), as many as the handlers'
    #: recent mean duration fits in this wait (the longest an event waits for the handlers
    #: before it in its group). Quick handlers are grouped, slow ones keep a transaction and a
    #: thread each. 0: always a transaction and a thread per event.
    sync_group_wait_ms: float = Field(default=10.0, ge=0)
    #: Which events must be handled one after another: those of one ``key`` (the default),
    #: all of one ``partition`` (like a plain Faust agent), or ``none`` (any order).
    ordering: Literal["key", "partition", "none"] = "key"
    #: Record each handled event in the inbox (in the handler's transaction) and skip
    #: redeliveries. Off only for handlers that are idempotent by themselves.
    inbox: bool = True
    #: After a key's event is dead-lettered: ``park_key`` dead-letters its later events too
    #: (reason ``key_parked``) until a redrive of the key succeeds, so a key's events are never
    #: applied past a gap; ``continue`` handles them as if nothing happened.
    on_dead_letter: Literal["park_key", "continue"] = "park_key"
    #: How long a rebalance or shutdown waits for events in flight before giving up on them.
    drain_timeout_s: float = Field(default=10.0, gt=0)
    #: How long the group waits for a silent member before giving its partitions to others
    #: (a crashed processor's events wait this long).
    session_timeout_s: float = Field(default=10.0, ge=6, le=300)
    #: Static membership (KIP-345): this instance's own name in its consumer group, one per
    #: instance (a StatefulSet's pod name, say). A restart within ``session_timeout_s`` gets
    #: its partitions back without a rebalance of the group; but a stop does not leave the
    #: group either, so its partitions wait that long before another member takes them.
    group_instance_id: str | None = Field(
        default=None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$"
    )
    #: How often the commit position is sent to Kafka.
    commit_interval_s: float = Field(default=1.0, gt=0)
    #: How long inbox rows are kept: a redelivery of an event older than this is no longer
    #: recognised, so keep it above the longest lag (and redrive delay) you expect.
    inbox_retention_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    inbox_cleanup_interval_s: float = Field(default=300.0, gt=0)
    #: A metrics line in the log every so often; a Prometheus endpoint when a port is given.
    metrics_log_interval_s: float = Field(default=30.0, gt=0)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: How long one thread may keep Python's interpreter while another waits for it (the
    #: processor sets ``sys.setswitchinterval``; Python's own is 5 ms). A worker thread waits
    #: this long for the busy event loop after each database reply. Unset: 0.5 ms on
    #: PostgreSQL (a network round trip per group), Python's own on SQLite (where a shorter one
    #: only costs the loop CPU).
    switch_interval_ms: float | None = Field(default=None, gt=0, le=100)
    #: The processor's event loop: ``uvloop`` (libuv; faster per event, where it is installed:
    #: Linux and macOS) or Python's own ``asyncio``.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    #: Where a consumer group with no committed offsets starts reading: the oldest records
    #: kept, or only those written from now on (a second saga orchestrator on shared topics,
    #: say, which has no use for the replies before it). Committed offsets always win.
    start: Literal["earliest", "latest"] = "earliest"


class SagaSettings(_Frozen):
    """Saga instances (pipeline/sagas/): how long the orchestrator keeps the ones that ended,
    and the participants the rows of their log."""

    #: Sagas that ended (completed, compensated, resolved) are deleted this long (at least a
    #: minute) after they ended, plus a margin of 10 minutes; ``None`` (``null`` in the
    #: environment) keeps them forever. Sagas still running, or waiting for an operator
    #: (compensation_failed, confirmation_failed), are never deleted. A saga id can be started
    #: again once its row is gone: keep this above the inbox retention, which is what stops a
    #: redelivered start (7 days by default).
    retention_s: float | None = Field(default=30 * 24 * 3600.0, ge=60)
    #: Ended sagas deleted per transaction (each orchestrator looks every few minutes).
    cleanup_batch_size: int = Field(default=1_000, gt=0)
    #: Each saga participant deletes the rows of its log of handled commands
    #: (``pipeline_saga_steps``) this long after it handled them, every few minutes; ``None``
    #: (the default) keeps them. Only safe above the longest a saga can stay open, including
    #: the time a ``compensation_failed`` saga may wait for an operator's retry: a
    #: compensation that arrives after its action's row is gone is answered "nothing to undo"
    #: and undoes nothing, and an action sent again is done again.
    step_log_retention_s: float | None = Field(default=None, ge=3600)


class DemoSettings(_Frozen):
    """The failures the demo's saga participants inject (consumers/*_service.py)."""

    #: Units of each SKU the inventory starts with; orders beyond it are refused (out of stock).
    stock_per_sku: int = Field(default=40, ge=0)
    #: Payments above this many cents are declined.
    decline_above_cents: int = Field(default=35_000, ge=0)
    #: Share of orders whose shipment the shipping service answers only after the saga's
    #: timeout (the saga compensates; the late reply is counted and changes nothing).
    slow_shipping_share: float = Field(default=0.01, ge=0, le=1)
    #: Share of refunds that fail ``refund_failures`` times before they succeed.
    flaky_refund_share: float = Field(default=0.5, ge=0, le=1)
    refund_failures: int = Field(default=2, ge=0)
