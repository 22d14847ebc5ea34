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
    java: Java, distribution: KafkaDistribution, properties: Path, log4j: Path, cluster_id: str
) -> list[str]:
    """``kafka-storage format``: prepares an empty data folder for KRaft (once)."""
    return [
        *_java_command(java, distribution, "256m", log4j),
        "kafka.tools.StorageTool",
        "format",
        "--ignore-formatted",
        # One token: a base64 id may start with "-", which would read as an option.
        f"--cluster-id={cluster_id}",
        "-c",
        str(properties),
    ]


def server_command(
    java: Java, distribution: KafkaDistribution, properties: Path, log4j: Path, heap: str
) -> list[str]:
    return [*_java_command(java, distribution, heap, log4j), "kafka.Kafka", str(properties)]
