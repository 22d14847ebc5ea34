"""The settings of the connections: Kafka, its producers, Elasticsearch, the database."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from pipeline.settings.base import LIBRDKAFKA_INT_MAX, _Frozen, http_url_problem


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

    @field_validator(
        "ssl_ca_location",
        "ssl_certificate_location",
        "ssl_key_location",
        "ssl_key_password",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # A variable set to nothing (a compose file's ${CA:-}) read as the current folder, a
        # file "." that then needed SSL; it means no file.
        return None if value == "" else value

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
        if not self.security_protocol.startswith("SASL_"):
            self._refuse_set(
                ("sasl_mechanism", "sasl_username", "sasl_password"), "SASL_PLAINTEXT or SASL_SSL"
            )
        return self

    @model_validator(mode="after")
    def _sasl_user_has_a_password(self) -> KafkaSettings:
        # As the certificate and its key: PLAIN and SCRAM log in with both, and one without the
        # other was refused only when a client was built, in librdkafka's words ("sasl.username
        # and sasl.password must be set"). (Without a SASL_* protocol either is refused above.)
        if not self.security_protocol.startswith("SASL_"):
            return self
        # Empty is missing: `PIPELINE_KAFKA__SASL_PASSWORD=$SECRET` with SECRET unset.
        if self.sasl_password is not None and not self.sasl_password.get_secret_value():
            raise ValueError("kafka.sasl_password is empty (a variable that was not set?)")
        if self.sasl_username is not None and not self.sasl_username.strip():
            raise ValueError("kafka.sasl_username is empty")
        if self.sasl_username is not None and self.sasl_password is None:
            raise ValueError(
                "kafka.sasl_username needs kafka.sasl_password (the SASL user's password)"
            )
        if self.sasl_password is not None and self.sasl_username is None:
            raise ValueError(
                "kafka.sasl_password needs kafka.sasl_username (the SASL user it is the "
                "password of)"
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
        self._refuse_set(
            ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location", "ssl_key_password"),
            "SSL or SASL_SSL",
        )
        return self

    def _refuse_set(self, names: tuple[str, ...], protocols: str) -> None:
        """A ValueError naming those of ``names`` that are set, which need one of ``protocols``
        (``kafka.security_protocol`` is another)."""
        given = [f"kafka.{name}" for name in names if getattr(self, name) is not None]
        if given:
            named = " and ".join([", ".join(given[:-1]), given[-1]] if given[:-1] else given)
            raise ValueError(
                f"{named} {'needs' if len(given) == 1 else 'need'} kafka.security_protocol "
                f"{protocols} (it is {self.security_protocol})"
            )

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
            if "@" in server:  # user:password@host: said without what comes before the "@"
                raise ValueError(
                    f"expected host:port, without a user or password (give those in "
                    f"PIPELINE_KAFKA__SASL_USERNAME and __SASL_PASSWORD), got "
                    f"...@{server.rpartition('@')[2].strip()}"
                )
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
    """How events are produced (always idempotent, acks=all; see pipeline/kafka/clients.py).

    The bounds are librdkafka's (its CONFIGURATION.md), so that a value it would refuse is an
    invalid setting at the start, not its error when a client is built."""

    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    #: librdkafka's ``linger.ms`` (``queue.buffering.max.ms``): 0 to 900000.
    linger_ms: float = Field(default=5.0, ge=0, le=900_000)
    #: How long librdkafka keeps retrying one event before reporting it failed
    #: (``delivery.timeout.ms``, ``message.timeout.ms``: up to 2147483647, more than linger_ms).
    delivery_timeout_ms: int = Field(default=120_000, gt=0, le=LIBRDKAFKA_INT_MAX)
    #: How long a send waits for room when the local queue is full before giving up
    #: (default: the delivery timeout plus 10 s, as the queue drains within that).
    queue_full_timeout_s: float | None = Field(default=None, gt=0)
    #: librdkafka's ``statistics.interval.ms``: 0 (off) to 86400000 (a day).
    statistics_interval_ms: int = Field(default=1_000, ge=0, le=86_400_000)

    @model_validator(mode="after")
    def _delivery_outlasts_the_linger(self) -> ProducerSettings:
        # librdkafka refuses to build a producer otherwise ("`message.timeout.ms` must be
        # greater than `linger.ms`").
        if self.delivery_timeout_ms <= self.linger_ms:
            raise ValueError(
                f"producer.delivery_timeout_ms ({self.delivery_timeout_ms:,} ms) must be more "
                f"than producer.linger_ms ({self.linger_ms:,g} ms): an event waits that long "
                "before it is sent"
            )
        return self


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
        if (problem := http_url_problem(value)) is not None:
            raise ValueError(problem)
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _api_key_fits_a_header(cls, value: SecretStr | None) -> SecretStr | None:
        """Sent as it is in an HTTP header: a line break there was a traceback quoting the key.
        One around it is dropped (a key read from a file, or a Kubernetes secret, keeps its
        last line break); one inside it is an error that names no part of it."""
        if value is None:
            return None
        key = value.get_secret_value().strip()
        if not key or any(character.isspace() or not character.isprintable() for character in key):
            raise ValueError(
                "an API key is one word of printable characters, as Elasticsearch gives it: "
                "this one is empty, or holds a space or a control character"
            )
        return SecretStr(key)

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
