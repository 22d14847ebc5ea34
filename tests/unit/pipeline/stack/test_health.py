"""The stack status lines count in words: "1 node", "1 topic", "2 topics"."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from pipeline.settings import KafkaSettings
from pipeline.stack import health
from pipeline.stack.health import elasticsearch_detail, kafka_detail


def test_elasticsearch_detail_says_one_node_in_the_singular():
    assert elasticsearch_detail("pipeline", "green", 1) == "cluster pipeline is green, 1 node"
    assert elasticsearch_detail("pipeline", "yellow", 3) == "cluster pipeline is yellow, 3 nodes"


def test_kafka_detail_agrees_with_the_numbers_of_brokers_and_topics():
    assert kafka_detail("abc", ["127.0.0.1:9092/1"], 1) == (
        "cluster abc, broker 127.0.0.1:9092/1, 1 topic"
    )
    assert (
        kafka_detail("abc", ["h:1/1", "h:2/2"], 12)
        == "cluster abc, brokers h:1/1, h:2/2, 12 topics"
    )


class _RefusingAdmin:
    """An admin client whose metadata request fails after the broker refused its login (what
    librdkafka logs, the project's admin client keeps as ``security_failure``)."""

    security_failure = "SASL authentication error: Authentication failed (invalid credentials)"

    def list_topics(self, timeout: float) -> object:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))


def test_a_kafka_that_refuses_the_login_is_said_to_refuse_it_not_to_be_silent(monkeypatch):
    # It said "the port is open but Kafka does not answer: ... Broker transport failure" while
    # every client command said the broker refused the credentials.
    monkeypatch.setattr(health, "port_answers", lambda host, port: True)
    monkeypatch.setattr(health, "build_admin", lambda kafka: _RefusingAdmin())

    found = health.kafka_health(KafkaSettings(bootstrap_servers="127.0.0.1:19092"))

    assert not found.ok and found.port_open
    assert found.detail.startswith(
        "Kafka answers but refuses the connection (SASL authentication error: Authentication "
        "failed (invalid credentials)): check the credentials"
    )


class _HandshakeFailingAdmin(_RefusingAdmin):
    security_failure = "SSL handshake failed: error:0A00010B:SSL routines::wrong version number"


def test_a_failed_tls_handshake_is_not_blamed_on_the_credentials(monkeypatch):
    # An HTTP server (or a plaintext Kafka) at the secure port read "refuses the connection:
    # check the credentials" (an outside re-check).
    monkeypatch.setattr(health, "port_answers", lambda host, port: True)
    monkeypatch.setattr(health, "build_admin", lambda kafka: _HandshakeFailingAdmin())

    found = health.kafka_health(KafkaSettings(bootstrap_servers="127.0.0.1:19097"))

    assert found.detail == (
        "the port is open but the TLS handshake failed: SSL handshake failed: "
        "error:0A00010B:SSL routines::wrong version number"
    )
