"""Every Kafka client is built here, from settings, and passed in elsewhere.

The ``*_config`` functions are pure (settings in, librdkafka config out) so they can be tested
without a broker; the ``build_*`` functions make the client objects, which open no connection
until first used.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from pipeline.errors import PipelineError
from pipeline.kafka.librdkafka_logs import librdkafka_logger
from pipeline.kafka.tls_diagnosis import certificate_refusal
from pipeline.settings import KafkaSettings, ProducerSettings


def kafka_common_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The librdkafka settings shared by every Kafka client: address and security."""
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": kafka.client_id,
        "security.protocol": kafka.security_protocol.lower(),
    }
    if kafka.sasl_mechanism is not None:
        config["sasl.mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username is not None:
        config["sasl.username"] = kafka.sasl_username
    if kafka.sasl_password is not None:
        config["sasl.password"] = kafka.sasl_password.get_secret_value()
    optional_paths = {
        "ssl.ca.location": kafka.ssl_ca_location,
        "ssl.certificate.location": kafka.ssl_certificate_location,
        "ssl.key.location": kafka.ssl_key_location,
    }
    config.update({key: str(path) for key, path in optional_paths.items() if path is not None})
    if kafka.ssl_key_password is not None:
        config["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    return config


def producer_config(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """A safe producer: idempotent, acknowledged by all in-sync replicas."""
    return {
        **kafka_common_config(kafka),
        "enable.idempotence": True,
        "acks": "all",
        # Kafka's default partitioner (murmur2), so keys land where the Java client puts them.
        "partitioner": "murmur2_random",
        **overrides,
    }


def consumer_config(kafka: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that commits only what the caller says is done."""
    return {
        **kafka_common_config(kafka),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        **overrides,
    }


# Admin calls report their own failures as one clear error; librdkafka's connection chatter
# on stderr would only bury it.
_admin_log = logging.getLogger("pipeline.kafka.admin")
_admin_log.addHandler(logging.NullHandler())
_admin_log.propagate = False

#: What librdkafka logs when the broker refuses our credentials or a TLS handshake fails; it
#: reports neither to the caller (a metadata request just times out as a transport failure).
_SECURITY_FAILURES = (
    "SASL authentication error",
    "SASL authentication failed",
    "SSL handshake failed",
)
_AFTER = re.compile(r" \(after \d+ms in state [A-Z_]+\)$")
#: OpenSSL's own error text, which librdkafka sometimes logs without "SSL handshake failed".
_OPENSSL_ERROR = re.compile(r"error:[0-9A-F]+:SSL routines:.*")


#: OpenSSL's words for the server's alert that it wanted a (trusted) client certificate.
_CLIENT_CERTIFICATE_WANTED = re.compile(r"alert (?:bad certificate|certificate required)")


#: librdkafka's words when the broker will not do the SASL mechanism asked for; it lists the
#: ones it offers, none when the listener takes no SASL at all (PLAINTEXT or SSL).
_HANDSHAKE = re.compile(
    r"SASL (?P<mechanism>\S+) mechanism handshake failed: .*"
    r"broker's supported mechanisms: *(?P<offered>[^(]*?)(?: \(after \d+ms in state [A-Z_]+\))?$"
)


#: Why the server alerted "bad certificate" (or "certificate required"), by whether the client
#: has a certificate of its own configured (``None``: not known).
_CLIENT_CERTIFICATE_HINTS = {
    False: (
        "; the listener requires a client certificate: set "
        "PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION and PIPELINE_KAFKA__SSL_KEY_LOCATION (unless "
        "this is a KRaft controller's port rather than a broker's)"
    ),
    True: (
        "; the listener does not trust the client certificate of "
        "PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION (is it signed by a CA of the broker's "
        "truststore? or is this a KRaft controller's port rather than a broker's?)"
    ),
    None: (
        "; the listener wants a client certificate it trusts: set "
        "PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION and PIPELINE_KAFKA__SSL_KEY_LOCATION if none "
        "is set (or is this a KRaft controller's port rather than a broker's?)"
    ),
}


def security_failure_of(log_line: str, *, client_certificate: bool | None = None) -> str | None:
    """The authentication or TLS failure in one of librdkafka's log lines, else ``None``
    (librdkafka never puts a password in them). ``client_certificate``: whether the client
    has a certificate of its own configured (``ssl.certificate.location``), which says why a
    listener alerted that it wants one (``None``: not known, both reasons)."""
    handshake = _HANDSHAKE.search(log_line.strip())
    if handshake is not None:
        mechanism, offered = handshake["mechanism"], handshake["offered"].strip()
        if not offered:
            return (
                f"SASL {mechanism} handshake failed: this listener takes no SASL; is "
                "PIPELINE_KAFKA__SECURITY_PROTOCOL right?"
            )
        return (
            f"SASL handshake failed: the broker offers {offered}, not {mechanism} "
            "(PIPELINE_KAFKA__SASL_MECHANISM)"
        )
    failure = None
    for marker in _SECURITY_FAILURES:
        start = log_line.find(marker)
        if start >= 0:
            failure = _AFTER.sub("", log_line[start:].strip())
            break
    else:
        openssl = _OPENSSL_ERROR.search(log_line)
        if openssl is not None:
            failure = f"SSL handshake failed: {_AFTER.sub('', openssl.group(0).strip())}"
    if failure is not None and _CLIENT_CERTIFICATE_WANTED.search(failure):
        # The server's alert, about the certificate this client sent or did not send: it read
        # as if the broker's certificate were wrong. Without one, it is the missing settings;
        # with one, one the listener does not trust (a controller's, which takes its node's).
        failure += _CLIENT_CERTIFICATE_HINTS[client_certificate]
    return failure


class _AdminLog:
    """The admin client's librdkafka logger: quiet, but remembers the last security failure."""

    def __init__(self, *, client_certificate: bool) -> None:
        self.security_failure: str | None = None
        #: Whether the client sends a certificate of its own (``ssl.certificate.location``).
        self.client_certificate = client_certificate

    def log(self, level: int, message: str, *args: Any) -> None:
        text = message % args if args else message
        failure = security_failure_of(text, client_certificate=self.client_certificate)
        self.security_failure = failure or self.security_failure
        _admin_log.log(level, "%s", text)


class PipelineAdmin(AdminClient):
    """:class:`AdminClient` that can say why it could not connect (:attr:`security_failure`)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._log = _AdminLog(client_certificate="ssl.certificate.location" in config)
        self._config = config
        #: librdkafka's "certificate verify failed" lines, each with OpenSSL's precise reason.
        self._certificate_refusals: dict[str, str] = {}
        # confluent-kafka's stubs type the config as plain values; a logger is any object with
        # a log(level, message, *args) method.
        with_logger: dict[str, Any] = {**config, "logger": self._log}
        super().__init__(with_logger)

    @property
    def security_protocol(self) -> str:
        """The ``security.protocol`` this client speaks (``PLAINTEXT`` unless set)."""
        return str(self._config.get("security.protocol", "PLAINTEXT")).upper()

    @property
    def security_failure(self) -> str | None:
        """The last authentication or TLS failure librdkafka logged, if any; a certificate it
        could not verify with the check that failed (a host name the certificate does not
        name, say) instead of librdkafka's advice to look at the CA."""
        self.poll(0)  # librdkafka hands its queued log lines to the logger when polled
        failure = self._log.security_failure
        if failure is None or "certificate verify failed" not in failure:
            return failure
        if failure not in self._certificate_refusals:
            why = certificate_refusal(self._config)
            self._certificate_refusals[failure] = (
                failure
                if why is None
                else f"SSL handshake failed: certificate verify failed: {why}"
            )
        return self._certificate_refusals[failure]

    def take_security_failure(self) -> str | None:
        """:attr:`security_failure`, forgotten once read: a long-running program's later
        trouble is not blamed on a refusal long past (librdkafka logs a refusal again at each
        try while it lasts)."""
        failure = self.security_failure
        self._log.security_failure = None
        return failure


T = TypeVar("T")


def _made(make: Callable[[dict[str, Any]], T], config: dict[str, Any]) -> T:
    """``make(config)``; librdkafka's refusal of the config (a TLS file it cannot read, a value
    it does not take) as one line naming it, instead of a ``KafkaException``."""
    try:
        return make(config)
    except KafkaException as error:
        missing = tls_file_problem(config)
        if missing is not None:  # librdkafka's word for it is OpenSSL's "BIO lib"
            raise PipelineError(f"cannot set up a Kafka client: {missing}") from None
        said = error.args[0].str() if error.args and hasattr(error.args[0], "str") else error
        # librdkafka's text ends with a line break: the error was two lines (and a JSON log
        # record held it).
        reason = " ".join(str(said).split())
        if "key values mismatch" in reason:  # OpenSSL's words; the key was read
            raise PipelineError(
                f"cannot set up a Kafka client: the key at {config.get('ssl.key.location')} is "
                f"not the key of the certificate at {config.get('ssl.certificate.location')} "
                "(PIPELINE_KAFKA__SSL_KEY_LOCATION, PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION)"
            ) from None
        if "ssl.key.location failed" in reason:
            # OpenSSL's "PEM lib": the key is encrypted and the password missing or wrong, or
            # the file holds no PEM key at all.
            raise PipelineError(
                f"cannot set up a Kafka client: the key at {config.get('ssl.key.location')} "
                "cannot be read: a missing or wrong PIPELINE_KAFKA__SSL_KEY_PASSWORD, or not a "
                f"PEM private key ({reason})"
            ) from None
        raise PipelineError(
            f"cannot set up a Kafka client with these settings: {reason} ({_settings_of(reason)})"
        ) from None


#: The TLS files of a client's config, and the setting that names each.
_TLS_FILES = {
    "ssl.ca.location": "PIPELINE_KAFKA__SSL_CA_LOCATION",
    "ssl.certificate.location": "PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION",
    "ssl.key.location": "PIPELINE_KAFKA__SSL_KEY_LOCATION",
}


def tls_file_problem(config: dict[str, Any]) -> str | None:
    """``no file at PATH (SETTING)`` for the first TLS file of ``config`` that is not there,
    or that this user cannot read (OpenSSL's words for that blamed the key's password, or the
    CA: ``cannot read PATH (SETTING): permission denied``)."""
    for key, setting in _TLS_FILES.items():
        path = config.get(key)
        if path is None or (key == "ssl.ca.location" and path == "probe"):
            continue  # librdkafka's "probe": the system's usual CA locations
        # A CA location may be a folder of certificates too.
        where = Path(path)
        found = where.exists() if key == "ssl.ca.location" else where.is_file()
        if not found:
            return f"no file at {path} ({setting})"
        # A folder is read by listing it and opening its files: both rights.
        if not os.access(where, os.R_OK | (os.X_OK if where.is_dir() else 0)):
            return f"cannot read {path} ({setting}): permission denied for this user"
    return None


#: The settings that set a librdkafka property, by the names librdkafka's errors give it (its
#: own, which an alias such as linger.ms is reported by, and the alias).
_SETTING_OF = {
    "bootstrap.servers": ("PIPELINE_KAFKA__BOOTSTRAP_SERVERS",),
    "client.id": ("PIPELINE_KAFKA__CLIENT_ID",),
    "security.protocol": ("PIPELINE_KAFKA__SECURITY_PROTOCOL",),
    "sasl.mechanisms": ("PIPELINE_KAFKA__SASL_MECHANISM",),
    "sasl.mechanism": ("PIPELINE_KAFKA__SASL_MECHANISM",),
    "sasl.username": ("PIPELINE_KAFKA__SASL_USERNAME",),
    "sasl.password": ("PIPELINE_KAFKA__SASL_PASSWORD",),
    "ssl.key.password": ("PIPELINE_KAFKA__SSL_KEY_PASSWORD",),
    "compression.codec": ("PIPELINE_PRODUCER__COMPRESSION",),
    "compression.type": ("PIPELINE_PRODUCER__COMPRESSION",),
    "queue.buffering.max.ms": ("PIPELINE_PRODUCER__LINGER_MS",),
    "linger.ms": ("PIPELINE_PRODUCER__LINGER_MS",),
    "message.timeout.ms": (
        "PIPELINE_PRODUCER__DELIVERY_TIMEOUT_MS",
        "PIPELINE_LOGS__DELIVERY_TIMEOUT_MS",
    ),
    "delivery.timeout.ms": (
        "PIPELINE_PRODUCER__DELIVERY_TIMEOUT_MS",
        "PIPELINE_LOGS__DELIVERY_TIMEOUT_MS",
    ),
    "statistics.interval.ms": ("PIPELINE_PRODUCER__STATISTICS_INTERVAL_MS",),
    "queue.buffering.max.messages": ("PIPELINE_LOGS__BUFFER_SIZE",),
    "session.timeout.ms": ("PIPELINE_LOGS__SHIPPER_SESSION_TIMEOUT_MS",),
    **{key: (setting,) for key, setting in _TLS_FILES.items()},
}

#: A property our settings set, as librdkafka's errors name it: quoted ("queue.buffering.max.ms",
#: `linger.ms`) or bare ("ssl.ca.location failed: ..."), a whole name either way.
_PROPERTY = re.compile(
    r"(?<![\w.])("
    + "|".join(re.escape(key) for key in sorted(_SETTING_OF, key=len, reverse=True))
    + r")(?![\w.])"
)


def _settings_of(reason: str) -> str:
    """``see SETTING`` for the settings that set the properties librdkafka names in
    ``reason``, else the hint of every Kafka setting."""
    settings = [
        setting for key in _PROPERTY.findall(reason) for setting in _SETTING_OF.get(key, ())
    ]
    if not settings:
        return "see the PIPELINE_KAFKA__* settings"
    return f"see {' or '.join(dict.fromkeys(settings))}"


def build_admin(kafka: KafkaSettings) -> PipelineAdmin:
    return _made(PipelineAdmin, kafka_common_config(kafka))


def build_producer(kafka: KafkaSettings, **overrides: Any) -> Producer:
    """A producer whose librdkafka log lines go through logging, summarised (see
    :mod:`pipeline.kafka.librdkafka_logs`; a ``logger`` override replaces that)."""
    return _made(Producer, {"logger": librdkafka_logger(), **producer_config(kafka, **overrides)})


# A checked config's librdkafka lines (no bootstrap servers, say): nobody's to read.
_check_log = logging.getLogger("pipeline.kafka.check")
_check_log.addHandler(logging.NullHandler())
_check_log.propagate = False


def check_producer(kafka: KafkaSettings, **overrides: Any) -> None:
    """Raise the :class:`PipelineError` :func:`build_producer` would raise for these settings
    (a TLS file that is not there, a key that does not open, a value librdkafka refuses),
    without a client that connects anywhere: librdkafka checks the config and loads the TLS
    files when a client is made, and this one is made without bootstrap servers and dropped."""
    config = {"logger": _check_log, **producer_config(kafka, **overrides)}
    del config["bootstrap.servers"]
    _made(Producer, config)


def event_producer_config(producer: ProducerSettings) -> dict[str, Any]:
    """The tunable part of a producer's config, from settings (pass to :func:`build_producer`)."""
    return {
        "compression.type": producer.compression,
        "linger.ms": producer.linger_ms,
        "delivery.timeout.ms": producer.delivery_timeout_ms,
        "statistics.interval.ms": producer.statistics_interval_ms,
    }


def build_consumer(kafka: KafkaSettings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer whose librdkafka log lines go through logging, summarised."""
    return _made(
        Consumer, {"logger": librdkafka_logger(), **consumer_config(kafka, group_id, **overrides)}
    )
