"""``pipeline gateway`` checks at the start that the topics its request types are produced to
exist, in the words every command uses (one line, exit code 2), as ``pipeline process`` does;
a Kafka that does not answer is no reason not to start."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from typer.testing import CliRunner

from pipeline.cli import gateway as gateway_cli
from pipeline.cli.main import app
from pipeline.errors import PipelineError
from pipeline.topics.admin import MissingTopicsError

BOOTSTRAP = "127.0.0.1:19092"


class FakeAdmin:
    """An admin client over a cluster holding ``topics``, or not answering at all."""

    def __init__(self, *topics: str, answers: bool = True) -> None:
        self.topics = topics
        self.answers = answers

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if not self.answers:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))
        return SimpleNamespace(
            topics={
                name: SimpleNamespace(partitions={0: SimpleNamespace(replicas=[1])})
                for name in self.topics
            }
        )

    def describe_configs(self, resources: list[Any], **kwargs: Any) -> dict[Any, Future[Any]]:
        futures: dict[Any, Future[Any]] = {}
        for resource in resources:
            future: Future[Any] = Future()
            future.set_result({})
            futures[resource] = future
        return futures


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the gateway went on to serve (replaced: no socket, no database)."""
    calls: list[bool] = []
    monkeypatch.setenv("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", BOOTSTRAP)
    monkeypatch.setattr(gateway_cli, "_serve", lambda *args, **kwargs: calls.append(True))
    # Its port check binds the port (test_gateway_port_taken.py): no socket here.
    monkeypatch.setattr("producers.gateway.workers.check_address", lambda host, port: None)
    monkeypatch.setattr(gateway_cli, "_FIRST_ANSWER_S", 0.01)
    return calls


def _gateway(monkeypatch: pytest.MonkeyPatch, admin: FakeAdmin) -> Any:
    monkeypatch.setattr("pipeline.kafka.clients.build_admin", lambda kafka: admin)
    return CliRunner().invoke(app, ["gateway"])


def test_the_request_topics_are_those_of_the_request_types():
    assert gateway_cli.request_topics() == ["requests.customers", "requests.orders"]


def test_a_missing_request_topic_stops_the_start_naming_it_as_every_command_does(
    monkeypatch: pytest.MonkeyPatch, served: list[bool]
):
    # With requests.customers deleted the gateway started, said ok, and each register_customer
    # waited 30 s for a 503 that named no topic.
    result = _gateway(monkeypatch, FakeAdmin("requests.orders", "logs"))

    assert isinstance(result.exception, MissingTopicsError), result.output
    assert isinstance(result.exception, PipelineError)  # one line and exit code 2, no traceback
    assert str(result.exception) == (
        f"topic requests.customers does not exist on Kafka at {BOOTSTRAP} "
        "(create it first, e.g. with `pipeline topics apply`)"
    )
    assert served == []


def test_every_missing_request_topic_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, served: list[bool]
):
    result = _gateway(monkeypatch, FakeAdmin())

    assert str(result.exception) == (
        f"topics requests.customers, requests.orders do not exist on Kafka at {BOOTSTRAP} "
        "(create them first, e.g. with `pipeline topics apply`)"
    )
    assert served == []


def test_with_every_request_topic_the_gateway_serves(
    monkeypatch: pytest.MonkeyPatch, served: list[bool]
):
    result = _gateway(monkeypatch, FakeAdmin("requests.orders", "requests.customers"))

    assert result.exit_code == 0, result.output
    assert served == [True]


def test_a_kafka_that_does_not_answer_does_not_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, served: list[bool]
):
    # /healthz says 503 until it answers; its topics are watched from then on.
    monkeypatch.setattr("pipeline.topics.admin.port_answers", lambda *args, **kwargs: False)
    result = _gateway(monkeypatch, FakeAdmin(answers=False))

    assert result.exit_code == 0, result.output
    assert served == [True]
