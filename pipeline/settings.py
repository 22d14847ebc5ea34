"""The one settings object of the project.

Read once at each entry point with ``PipelineSettings()`` (environment variables with the prefix
``PIPELINE_``, nested with ``__``, e.g. ``PIPELINE_KAFKA__BOOTSTRAP_SERVERS``) and passed down.
The nested sections are frozen value objects that never read the environment themselves.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.retry import RetryPolicy
from pipeline.topic_names import kafka_name_problem

KAFKA_VERSION = "3.9.1"
KAFKA_SCALA_VERSION = "2.13"
ELASTICSEARCH_VERSION = "8.19.3"


def masked_url(value: str) -> str:
    """A URL setting as output may show it: whatever comes before an ``@`` (user and password,
    with a scheme or without one) is masked."""
    head, at, rest = value.rpartition("@")
    if not at:
        return value
    scheme, sep, _ = head.partition("://")
    return f"{scheme}{sep}[REDACTED]@{rest}" if sep else f"[REDACTED]@{rest}"


def shown_url(value: str) -> str:
    """A URL setting as an error may quote it: :func:`masked_url`, quoted."""
    return repr(masked_url(value))


def _port_reads(url: str) -> bool:
    """Whether ``url``'s port, when it names one, is a number from 0 to 65535."""
    try:
        urlsplit(url).port  # noqa: B018 (reading it checks it)
    except ValueError:
        return False
    return True


#: The longest duration a setting may give (``*_s``; ``*_ms`` a thousand times that): 100 years,
#: "for ever" for any of them. Past it the moments computed from it overflow: a retention of
#: 1e12 s ends before the year 1, and a wait that long is more than the clock takes.
LONGEST_S = 100 * 365.25 * 24 * 3600


class _Frozen(BaseModel):
    # hide_input_in_errors: a refused value is never quoted in the error (pydantic's
    # "input_value=..."), which may be a password or a URL holding one. allow_inf_nan: no
    # setting means anything by inf or nan (a poll interval of inf never looked again).
    model_config = ConfigDict(
        frozen=True, extra="forbid", hide_input_in_errors=True, allow_inf_nan=False
    )

    @field_validator("*", mode="after")
    @classmethod
    def _duration_fits(cls, value: Any, info: ValidationInfo) -> Any:
        """A duration (a number named ``*_s`` or ``*_ms``) is at most :data:`LONGEST_S`."""
        name = info.field_name or ""
        if name.endswith("_per_s"):  # a rate (gateway.rate_per_s), not a duration
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            unit = "ms" if name.endswith("_ms") else "s" if name.endswith("_s") else None
            most = LONGEST_S * 1000 if unit == "ms" else LONGEST_S
            if unit is not None and value > most:
                raise ValueError(f"at most {most:.0f} {unit} (100 years)")
        return value


class KafkaSettings(_Frozen):
    """How clients reach Kafka."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "pipeline"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None

    @model_validator(mode="after")
    def _sasl_has_a_mechanism(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and self.sasl_mechanism is None:
            raise ValueError(
                f"kafka.security_protocol {self.security_protocol} needs kafka.sasl_mechanism "
                "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        return self

    @model_validator(mode="after")
    def _sasl_settings_have_a_sasl_protocol(self) -> KafkaSettings:
        # Without a SASL_* protocol librdkafka logs in with nothing: the mechanism and the
        # credentials went unused, with only a warning of librdkafka's from every client.
        if self.security_protocol.startswith("SASL_"):
            return self
        given = [
            f"kafka.{name}"
            for name in ("sasl_mechanism", "sasl_username", "sasl_password")
            if getattr(self, name) is not None
        ]
        if given:
            named = " and ".join([", ".join(given[:-1]), given[-1]] if given[:-1] else given)
            raise ValueError(
                f"{named} {'needs' if len(given) == 1 else 'need'} kafka.security_protocol "
                f"SASL_PLAINTEXT or SASL_SSL (it is {self.security_protocol})"
            )
        return self

    @model_validator(mode="after")
    def _ssl_settings_have_a_tls_protocol(self) -> KafkaSettings:
        # As the SASL settings: without SSL or SASL_SSL librdkafka never reads them, and the
        # client met a TLS listener with PLAINTEXT, told after its timeout to set what was set.
        if self.security_protocol.endswith("SSL"):
            if self.ssl_key_password is not None and self.ssl_key_location is None:
                raise ValueError(
                    "kafka.ssl_key_password needs kafka.ssl_key_location (the key it unlocks)"
                )
            return self
        given = [
            f"kafka.{name}"
            for name in (
                "ssl_ca_location",
                "ssl_certificate_location",
                "ssl_key_location",
                "ssl_key_password",
            )
            if getattr(self, name) is not None
        ]
        if given:
            named = " and ".join([", ".join(given[:-1]), given[-1]] if given[:-1] else given)
            raise ValueError(
                f"{named} {'needs' if len(given) == 1 else 'need'} kafka.security_protocol "
                f"SSL or SASL_SSL (it is {self.security_protocol})"
            )
        return self

    @model_validator(mode="after")
    def _certificate_has_its_key(self) -> KafkaSettings:
        # librdkafka reads the key only from ssl.key.location (not from a PEM holding both):
        # without it no certificate is sent, and the broker's "bad certificate" alert would
        # point at the certificate instead of the missing setting.
        if self.ssl_certificate_location is not None and self.ssl_key_location is None:
            raise ValueError(
                "kafka.ssl_certificate_location needs kafka.ssl_key_location (the client "
                "certificate's private key, a PEM file of its own)"
            )
        if self.ssl_key_location is not None and self.ssl_certificate_location is None:
            raise ValueError(
                "kafka.ssl_key_location needs kafka.ssl_certificate_location (the client "
                "certificate that key belongs to)"
            )
        return self

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for server in value.split(","):
            if server.strip().lower().startswith(("http://", "https://")):
                # librdkafka takes a listener's name (SSL://host:9093), never a web URL.
                raise ValueError(f"expected host:port (Kafka's, not an http URL), got {value!r}")
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
            if any(character.isspace() for character in host):
                # librdkafka would look the name up as it is, and wait for ever for a broker.
                raise ValueError(
                    f"host {host!r} of {server.strip()!r} has whitespace in it: "
                    "separate servers with commas"
                )
            if not 0 < int(port) < 65536:
                raise ValueError(f"port {port} of {server.strip()!r} is not between 1 and 65535")
        return value


class ProducerSettings(_Frozen):
    """How events are produced (always idempotent, acks=all; see pipeline/kafka/clients.py)."""

    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    linger_ms: float = Field(default=5.0, ge=0)
    #: How long librdkafka keeps retrying one event before reporting it failed.
    delivery_timeout_ms: int = Field(default=120_000, gt=0)
    #: How long a send waits for room when the local queue is full before giving up
    #: (default: the delivery timeout plus 10 s, as the queue drains within that).
    queue_full_timeout_s: float | None = Field(default=None, gt=0)
    statistics_interval_ms: int = Field(default=1_000, ge=0)


#: Signature algorithms a JWT may use: HMAC with a shared secret, or RSA / ECDSA with a public key.
#: ``none`` is not one of them.
JwtAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "ES512",
]  # fmt: skip


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
    #: Where Idempotency-Keys are kept: ``auto`` (in PostgreSQL, shared by every gateway
    #: process, when ``database.url`` is PostgreSQL; else this process's memory), ``memory``
    #: or ``postgres``.
    idempotency_store: Literal["auto", "memory", "postgres"] = "auto"
    #: JWT bearer tokens accepted besides the API keys; none by default.
    jwt: JwtSettings | None = None

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


class ElasticsearchSettings(_Frozen):
    """How clients reach Elasticsearch: an API key or basic auth, never both."""

    url: str = "http://127.0.0.1:9200"
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: Path | None = None
    request_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {shown_url(value)}")
        if not _port_reads(value) or not urlsplit(value).hostname:
            raise ValueError(f"expected http(s)://host[:port], got {shown_url(value)}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> ElasticsearchSettings:
        if self.api_key is not None and self.username is not None:
            raise ValueError("set either an API key or a username and password, not both")
        if self.ca_certs is not None and not self.url.startswith("https://"):
            # The client refuses TLS options for http:// (a ValueError when it is built).
            raise ValueError("a CA certificate (ca_certs) needs an https:// URL")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        return self


#: A database URL as SQLAlchemy reads it (``sqlalchemy.engine.url``'s pattern, up to the port):
#: the password ends at the first "@" ("/", "?" and "#" are part of it), the host at a ":",
#: "/" or "?".
_DATABASE_URL = re.compile(
    r"[\w+]+://(?:[^:/]*(?::(?P<password>[^@]*))?@)?"
    r"(?:(?:\[[^/?]+\]|(?P<host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?"
)

#: Why a database URL whose password holds an "@" cannot be used, and what to do.
PASSWORD_NOT_ENCODED = (
    "the URL holds more than one @ (a password with an @, which ends it?): percent-encode "
    "special characters in the password and the rest of the URL (@ as %40), or set the "
    "password apart in PIPELINE_DATABASE__PASSWORD"
)


class DatabaseSettings(_Frozen):
    """The service database. The password is kept apart from the URL so it is never logged."""

    url: str = "sqlite:///pipeline.db"
    password: SecretStr | None = None
    #: SQLite only. ``NORMAL`` (WAL): a commit survives the program being killed, not the
    #: machine losing power or the OS crashing (the last commits may be gone while Kafka kept
    #: their offsets: their events would be lost). ``FULL``: every commit waits for the disk
    #: too (an fsync each; group commit shares one among many events).
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"

    @field_validator("url")
    @classmethod
    def _reads_as_sqlalchemy_reads_it(cls, value: str) -> str:
        # Checked as SQLAlchemy reads the URL (any other URL it cannot use is a one-line error
        # of build_engine's). The URL is not quoted: it may hold a password.
        scheme, sep, _ = value.partition("://")
        parts = _DATABASE_URL.match(value)
        if not sep or scheme.startswith("sqlite") or parts is None:
            return value
        host, port = parts["host"] or "", parts["port"] or ""
        # The password ends at its first "@": the rest of it was taken for the host, the port,
        # the database's name or the query (where a "/" or "?" in it ends the host), which an
        # error or a start-up line would then show, and a host name looked up. A URL has one
        # "@" at most, between the user info and the host: any other is percent-encoded.
        if value.count("@") > 1 or "@" in host or "@" in port:
            raise ValueError(PASSWORD_NOT_ENCODED)
        # SQLAlchemy refuses such a port with a bare ValueError.
        if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
            raise ValueError("the port in the URL is not a number from 0 to 65535")
        return value


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
    buffer_size: int = Field(default=10_000, gt=0)
    #: How long the handler waits for Kafka when flushing at exit.
    flush_timeout_s: float = Field(default=5.0, ge=0)
    #: How long librdkafka keeps trying to deliver one record before it goes to stderr.
    delivery_timeout_ms: int = Field(default=60_000, gt=0)
    shipper_group: str = "pipeline-log-shipper"
    #: How soon the group notices a shipper that died (librdkafka's default is 45 s).
    shipper_session_timeout_ms: int = Field(default=10_000, ge=6_000)
    shipper_batch_size: int = Field(default=2_000, gt=0)
    #: How long the shipper waits to fill a batch.
    shipper_batch_timeout_s: float = Field(default=0.5, gt=0)
    #: Attempts for a document Elasticsearch answered 429 or 5xx, then it is dead-lettered.
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


#: A size the JVM's -Xms and -Xmx take: bytes, or a number of k, m, g or t.
_JVM_SIZE = re.compile(r"[1-9][0-9]*[kKmMgGtT]?")


def _default_stack_home() -> Path:
    # Elasticsearch runs as a dedicated user when we are root, and that user cannot enter
    # /root, so root's stack lives in a world-traversable place.
    if os.geteuid() == 0:
        return Path("/var/lib/pipeline")
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "pipeline"


class StackSettings(_Frozen):
    """The local Kafka + Elasticsearch + PostgreSQL stack started by ``pipeline stack up``."""

    home: Path = Field(default_factory=_default_stack_home)
    #: Where fetched distributions are kept; default ``<home>/dist``. Stacks may share it.
    dist_dir: Path | None = None
    kafka_version: str = KAFKA_VERSION
    kafka_scala_version: str = KAFKA_SCALA_VERSION
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    kafka_heap: str = "512m"
    elasticsearch_version: str = ELASTICSEARCH_VERSION
    elasticsearch_transport_port: int = Field(default=9300, ge=1, le=65535)
    elasticsearch_heap: str = "1g"
    elasticsearch_user: str = "pipeline-es"
    #: PostgreSQL from Debian's packages, on 127.0.0.1 (see pipeline/stack/postgres_node.py).
    postgres_port: int = Field(default=5432, ge=1, le=65535)
    #: The system user that owns the cluster and runs the server when we are root.
    postgres_user: str = "pipeline-pg"
    #: The login role, its password and its database, created once after initdb.
    postgres_role: str = "pipeline"
    postgres_password: SecretStr = SecretStr("pipeline")
    postgres_database: str = "pipeline"
    #: Where ``postgres`` and ``initdb`` are; default ``pg_config --bindir``, else the newest
    #: ``/usr/lib/postgresql/*/bin``.
    postgres_bin_dir: Path | None = None
    start_timeout_s: float = Field(default=120.0, gt=0)
    #: The secure stack (``pipeline stack up --secure``, home ``<home>/secure``) listens on
    #: each of these ports plus this offset, so both stacks can run at once.
    secure_port_offset: int = Field(default=10, ge=1, le=10_000)
    compose_file: Path = Path("docker-compose.yml")

    @field_validator("kafka_heap", "elasticsearch_heap")
    @classmethod
    def _jvm_heap_size(cls, value: str) -> str:
        # Else the JVM refused it at start ("Invalid initial heap size: -Xms1gb").
        if not _JVM_SIZE.fullmatch(value):
            raise ValueError(f"{value!r} is no JVM heap size: a number, then k, m or g (512m, 1g)")
        return value


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


class PipelineSettings(BaseSettings):
    """Everything configurable: environment (prefix ``PIPELINE_``, nested ``__``) or ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
        # An optional setting is unset with the value null (e.g. PIPELINE_SAGAS__RETENTION_S).
        env_parse_none_str="null",
        hide_input_in_errors=True,  # as _Frozen: no value quoted in an error
    )

    service_name: str = "pipeline"
    kafka: KafkaSettings = KafkaSettings()
    producer: ProducerSettings = ProducerSettings()
    gateway: GatewaySettings = GatewaySettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    database: DatabaseSettings = DatabaseSettings()
    outbox: OutboxSettings = OutboxSettings()
    logs: LogSettings = LogSettings()
    processing: ProcessingSettings = ProcessingSettings()
    sagas: SagaSettings = SagaSettings()
    demo: DemoSettings = DemoSettings()
    # Built per PipelineSettings() (at the entry point), not at import: its home depends on
    # who runs the program.
    stack: StackSettings = Field(default_factory=StackSettings)

    @model_validator(mode="after")
    def _gateway_waits_less_than_librdkafka_tries(self) -> PipelineSettings:
        # The gateway's 503 means "not acknowledged yet, librdkafka is still trying"; waiting
        # longer than librdkafka ever tries makes that timeout dead code, and usually means a
        # unit mix-up (milliseconds given to a field in seconds).
        delivery_timeout_s = self.producer.delivery_timeout_ms / 1000
        if self.gateway.produce_timeout_s > delivery_timeout_s:
            raise ValueError(
                f"gateway.produce_timeout_s ({self.gateway.produce_timeout_s:g} s) must not "
                f"exceed producer.delivery_timeout_ms ({delivery_timeout_s:g} s): librdkafka "
                "settles every event within its delivery timeout"
            )
        return self


def setting_variables(
    model: type[BaseModel] = PipelineSettings, prefix: str = "PIPELINE_"
) -> set[str]:
    """The environment variable of every setting (``PIPELINE_KAFKA__BOOTSTRAP_SERVERS``), and
    of every section (``PIPELINE_KAFKA``, which takes JSON)."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        variable = f"{prefix}{field_name.upper()}"
        names.add(variable)
        for kind in (field.annotation, *get_args(field.annotation)):  # JwtSettings | None
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                names |= setting_variables(kind, f"{variable}__")
    return names


def complex_setting_variables(
    model: type[BaseModel] = PipelineSettings, prefix: str = "PIPELINE_"
) -> set[str]:
    """The environment variables that take JSON: a list or map setting's
    (``PIPELINE_GATEWAY__TRUSTED_PROXIES``) and a section's (``PIPELINE_KAFKA``), as
    pydantic-settings parses them. No other setting's value is JSON (a password starting with
    ``{`` is a password)."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        variable = f"{prefix}{field_name.upper()}"
        for kind in (field.annotation, *get_args(field.annotation)):  # JwtSettings | None
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                names.add(variable)
                names |= complex_setting_variables(kind, f"{variable}__")
            elif get_origin(kind) in (list, dict, set, frozenset, tuple):
                names.add(variable)
    return names


def misspelled_settings(variables: Iterable[str]) -> dict[str, str]:
    """Each of ``variables`` that is not a setting's but is one with its underscores or case
    wrong (``PIPELINE_KAFKA_BOOTSTRAP_SERVERS``): pydantic-settings ignores such a name, so
    the setting would silently keep its default. Maps it to the setting's variable."""
    known = setting_variables()

    def squeezed(name: str) -> str:
        return name.upper().replace("_", "")

    by_squeezed = {squeezed(name): name for name in known}
    found = {}
    for variable in variables:
        # Names are read whatever their case (pydantic-settings' default).
        if variable.upper() in known or not variable.upper().startswith("PIPELINE_"):
            continue
        meant = by_squeezed.get(squeezed(variable)) or _section_misspelled(variable, known)
        if meant is not None:
            found[variable] = meant
    return found


def _section_misspelled(variable: str, known: set[str]) -> str | None:
    """The setting's variable meant by one whose section is misspelled
    (``PIPELINE_PROCESING__MAX_IN_FLIGHT``): pydantic-settings ignores a section it does not
    know, where a wrong field of a known one is refused as an extra input. Only when the
    section is like one (its own name compared, not the prefix all share) and the rest is one
    of that section's settings: a script's own ``PIPELINE_STAGE__NAME`` is left alone."""
    section, sep, rest = variable.upper().removeprefix("PIPELINE_").partition("__")
    sections = {name.removeprefix("PIPELINE_") for name in known if "__" not in name}
    if not sep:
        return None
    if section in sections:
        # A known section, a field like one of its own (PIPELINE_KAFKA__BOOTSTRAP_SERVER):
        # pydantic refuses it as an extra input, which does not say what was meant.
        fields = {
            name.split("__", 1)[1] for name in known if name.startswith(f"PIPELINE_{section}__")
        }
        field = difflib.get_close_matches(rest, fields, n=1, cutoff=0.85)
        return f"PIPELINE_{section}__{field[0]}" if field else None
    for close in difflib.get_close_matches(section, sections, n=3, cutoff=0.8):
        fixed = f"PIPELINE_{close}__{rest}"
        if fixed in known:
            return fixed
    return None
