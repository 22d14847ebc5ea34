"""The one settings object of the project.

Read once at each entry point with ``PipelineSettings()`` (environment variables with the prefix
``PIPELINE_``, nested with ``__``, e.g. ``PIPELINE_KAFKA__BOOTSTRAP_SERVERS``) and passed down.
The nested sections are frozen value objects that never read the environment themselves.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KAFKA_VERSION = "3.9.1"
KAFKA_SCALA_VERSION = "2.13"
ELASTICSEARCH_VERSION = "8.19.3"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value


class ProducerSettings(_Frozen):
    """How events are produced (always idempotent, acks=all; see pipeline/clients.py)."""

    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    linger_ms: float = Field(default=5.0, ge=0)
    #: How long librdkafka keeps retrying one event before reporting it failed.
    delivery_timeout_ms: int = Field(default=120_000, gt=0)
    #: How long a send waits for room when the local queue is full before giving up
    #: (default: the delivery timeout plus 10 s, as the queue drains within that).
    queue_full_timeout_s: float | None = Field(default=None, gt=0)
    statistics_interval_ms: int = Field(default=1_000, ge=0)


class GatewaySettings(_Frozen):
    """The HTTP request gateway (``pipeline gateway``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
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
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> ElasticsearchSettings:
        if self.api_key is not None and self.username is not None:
            raise ValueError("set either an API key or a username and password, not both")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        return self


class DatabaseSettings(_Frozen):
    """The service database. The password is kept apart from the URL so it is never logged."""

    url: str = "sqlite:///pipeline.db"
    password: SecretStr | None = None


def _default_stack_home() -> Path:
    # Elasticsearch runs as a dedicated user when we are root, and that user cannot enter
    # /root, so root's stack lives in a world-traversable place.
    if os.geteuid() == 0:
        return Path("/var/lib/pipeline")
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "pipeline"


class StackSettings(_Frozen):
    """The local Kafka + Elasticsearch stack started by ``pipeline stack up``."""

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
    start_timeout_s: float = Field(default=120.0, gt=0)
    compose_file: Path = Path("docker-compose.yml")


class PipelineSettings(BaseSettings):
    """Everything configurable: environment (prefix ``PIPELINE_``, nested ``__``) or ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    service_name: str = "pipeline"
    kafka: KafkaSettings = KafkaSettings()
    producer: ProducerSettings = ProducerSettings()
    gateway: GatewaySettings = GatewaySettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    database: DatabaseSettings = DatabaseSettings()
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
