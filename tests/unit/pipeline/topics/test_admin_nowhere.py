"""A command gives up on Kafka after a few seconds, not its whole timeout, when no bootstrap
address can be connected to (nothing listens there, or its host does not resolve), and says
which of the two it is; where something listens it waits the whole timeout, as for a broker
still starting. (Unit tests have no network: the connections are answered by a stand-in.)"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.topics import admin

LISTENING = "127.0.0.1:19092"
REFUSING = "127.0.0.1:19093"


class NoBrokerAdmin:
    """An admin client whose metadata request always fails as librdkafka's does when it cannot
    connect ("Broker transport failure")."""

    def list_topics(self, timeout: float) -> Any:
        time.sleep(min(timeout, 0.01))
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))


class Connection:
    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        return None


def connect(address: tuple[str, int], timeout: float) -> Connection:
    host, port = address
    if host == "nosuchhost.invalid":
        raise socket.gaierror(-2, "Name or service not known")
    if f"{host}:{port}" == LISTENING:
        return Connection()
    raise ConnectionRefusedError(111, "Connection refused")


@pytest.fixture(autouse=True)
def stand_in_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin, "NOTHING_LISTENS_GRACE_S", 0.05)
    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(
        admin, "port_answers", lambda host, port, **_: f"{host}:{port}" == LISTENING
    )


def test_nothing_listening_ends_the_wait_early_and_says_so() -> None:
    began = time.monotonic()
    with pytest.raises(admin.KafkaUnavailableError) as raised:
        admin._metadata(NoBrokerAdmin(), REFUSING, timeout_s=30.0)  # type: ignore[arg-type]

    assert time.monotonic() - began < 10.0
    assert f"nothing listens at {REFUSING}: connection refused" in str(raised.value)
    assert "is the broker running" in str(raised.value)


def test_a_host_that_does_not_resolve_is_named() -> None:
    bootstrap = f"nosuchhost.invalid:9092,{REFUSING}"

    with pytest.raises(admin.KafkaUnavailableError) as raised:
        admin._metadata(NoBrokerAdmin(), bootstrap, timeout_s=30.0)  # type: ignore[arg-type]

    assert "(cannot resolve host nosuchhost.invalid; nothing listens at " in str(raised.value)


def test_one_address_that_listens_keeps_the_whole_timeout() -> None:
    began = time.monotonic()

    with pytest.raises(admin.KafkaUnavailableError) as raised:
        admin._metadata(NoBrokerAdmin(), f"{REFUSING},{LISTENING}", timeout_s=1.0)  # type: ignore[arg-type]

    assert time.monotonic() - began >= 1.0
    assert f"though something listens at {LISTENING}" in str(raised.value)


def test_a_long_running_programs_text_names_the_host_that_does_not_resolve() -> None:
    # The gateway's /healthz and its log say this, not librdkafka's "Broker transport failure".
    said = admin.not_answering_text("nosuchhost.invalid:9092", "Local: Broker transport failure")

    assert said.startswith("Kafka at nosuchhost.invalid:9092 does not answer (cannot resolve host")
    assert "Broker transport failure" not in said
