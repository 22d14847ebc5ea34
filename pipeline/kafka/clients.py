"""Every Kafka client is built here, from settings, and passed in elsewhere.

The ``*_config`` functions are pure (settings in, librdkafka config out) so they can be tested
without a broker; the ``build_*`` functions make the client objects, which open no connection
until first used.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from pipeline.kafka.librdkafka_logs import librdkafka_logger
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


def build_admin(kafka: KafkaSettings) -> AdminClient:
    config: dict[str, Any] = {**kafka_common_config(kafka), "logger": _admin_log}
    return AdminClient(config)


def build_producer(kafka: KafkaSettings, **overrides: Any) -> Producer:
    """A producer whose librdkafka log lines go through logging, summarised (see
    :mod:`pipeline.kafka.librdkafka_logs`; a ``logger`` override replaces that)."""
    return Producer({"logger": librdkafka_logger(), **producer_config(kafka, **overrides)})


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
    return Consumer(
        {"logger": librdkafka_logger(), **consumer_config(kafka, group_id, **overrides)}
    )
