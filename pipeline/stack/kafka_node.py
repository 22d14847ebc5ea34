"""A single-node Kafka in KRaft mode (broker and controller in one process)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from pipeline.stack.distribution import KafkaDistribution
from pipeline.stack.preflight import Java


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64, unpadded (as kafka-storage)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def server_properties(host: str, port: int, controller_port: int, data_dir: Path) -> str:
    """``server.properties`` for one node that is broker and controller, listening on ``host``."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "3",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "log.retention.check.interval.ms": "60000",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def secure_server_properties(
    host: str,
    port: int,
    controller_port: int,
    data_dir: Path,
    *,
    username: str,
    password: str,
    server_certificate_pem: str,
    server_key_pem: str,
    ca_certificate: Path,
) -> str:
    """``server.properties`` for the secure stack: one SASL_SSL listener (SCRAM-SHA-512) for
    clients and the broker itself; the controller's listener on ``host`` is TLS with client
    certificates required (mutual TLS): only a holder of a certificate of the stack's CA talks
    to it, which is the node itself with its server certificate (its usage allows client
    authentication too). A PLAINTEXT controller listener took any local process's config
    changes without a password (``kafka-configs --bootstrap-controller``), around SASL;
    SCRAM cannot secure it (KRaft keeps the SCRAM users in the metadata the controller serves).

    The key and certificate go in inline (PEM), so the unencrypted key needs no key password.
    The text holds the key and a password: write it readable by its owner only.
    """
    base = server_properties(host, port, controller_port, data_dir)
    plain = {
        "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{username}" password="{password}";'
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": _one_line(server_certificate_pem),
        "ssl.keystore.key": _one_line(server_key_pem),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca_certificate),
        "ssl.client.auth": "none",
        "listener.name.controller.ssl.client.auth": "required",
    }
    replaced = {line.split("=", 1)[0] for line in base.splitlines()} & plain.keys()
    kept = [line for line in base.splitlines() if line.split("=", 1)[0] not in replaced]
    return "\n".join(kept) + "\n" + "".join(f"{key}={value}\n" for key, value in plain.items())


def _one_line(pem: str) -> str:
    """A PEM block as one properties value (Java's Properties reads ``\\n`` as a newline)."""
    return pem.strip().replace("\n", "\\n")


def scram_arguments(mechanism: str, username: str, password: str) -> list[str]:
    """``kafka-storage format`` arguments that create a SCRAM user in the new cluster."""
    return ["--add-scram", f"{mechanism}=[name={username},password={password}]"]


LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.state.change.logger=WARN
"""


def _java_command(java: Java, distribution: KafkaDistribution, heap: str, log4j: Path) -> list[str]:
    return [
        str(java.executable),
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        distribution.classpath,
    ]


def format_command(
    java: Java,
    distribution: KafkaDistribution,
    properties: Path,
    log4j: Path,
    cluster_id: str,
    extra: list[str] | None = None,
) -> list[str]:
    """``kafka-storage format``: prepares an empty data folder for KRaft (once); ``extra``
    arguments such as :func:`scram_arguments`."""
    return [
        *_java_command(java, distribution, "256m", log4j),
        "kafka.tools.StorageTool",
        "format",
        "--ignore-formatted",
        # One token: a base64 id may start with "-", which would read as an option.
        f"--cluster-id={cluster_id}",
        "-c",
        str(properties),
        *(extra or []),
    ]


def server_command(
    java: Java, distribution: KafkaDistribution, properties: Path, log4j: Path, heap: str
) -> list[str]:
    return [*_java_command(java, distribution, heap, log4j), "kafka.Kafka", str(properties)]
