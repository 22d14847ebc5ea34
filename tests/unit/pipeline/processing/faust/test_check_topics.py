"""``pipeline process`` checks its topics with the same words as every other command."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.envelope import Event
from pipeline.errors import PipelineError
from pipeline.processing import Processor, UnitOfWork
from pipeline.processing.faust import app as faust_app
from pipeline.settings import PipelineSettings
from pipeline.topics.admin import MissingTopicsError

BOOTSTRAP = "127.0.0.1:9092"


def _metadata_topic() -> Any:
    return SimpleNamespace(partitions={0: SimpleNamespace(replicas=[1])})


class VirtualClock:
    """``time`` for the topic checks: only the waits of the admin client move it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class FakeAdmin:
    """An admin client over a cluster holding ``topics`` (or not answering at all: each
    request then takes its whole timeout on ``clock``, as the real client's would)."""

    def __init__(
        self, topics: list[str], *, answers: bool = True, clock: VirtualClock | None = None
    ) -> None:
        self.topics = topics
        self.answers = answers
        self.clock = clock or VirtualClock()

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if not self.answers:
            self.clock.now += timeout
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return SimpleNamespace(topics={name: _metadata_topic() for name in self.topics})

    def describe_configs(self, resources: list[Any], **kwargs: Any) -> dict[Any, Future[Any]]:
        futures: dict[Any, Future[Any]] = {}
        for resource in resources:
            future: Future[Any] = Future()
            future.set_result({})
            futures[resource] = future
        return futures


def _processor(*topics: str) -> Processor:
    processor = Processor("check-topics-test")
    for topic in topics:

        @processor.handler(topic)
        def handle(event: Event, unit: UnitOfWork) -> None:
            pass

    return processor


def _check(monkeypatch: pytest.MonkeyPatch, admin: FakeAdmin, processor: Processor) -> None:
    monkeypatch.setattr(faust_app, "build_admin", lambda kafka: admin)
    settings = PipelineSettings.model_validate({"kafka": {"bootstrap_servers": BOOTSTRAP}})
    faust_app.check_topics(settings, processor)


def test_missing_topics_are_worded_like_the_other_commands(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(MissingTopicsError) as raised:
        _check(monkeypatch, FakeAdmin([]), _processor("orders.requests"))

    assert str(raised.value) == (
        f"topics orders.requests, orders.requests.dlq do not exist on Kafka at {BOOTSTRAP} "
        "(create them first, e.g. with `pipeline topics apply`)"
    )


def test_one_missing_topic_is_named_alone_in_the_produce_commands_words(
    monkeypatch: pytest.MonkeyPatch,
):
    with pytest.raises(MissingTopicsError) as raised:
        _check(monkeypatch, FakeAdmin(["orders.requests"]), _processor("orders.requests"))

    # Word for word what `pipeline produce` says of a missing topic.
    assert str(raised.value) == (
        f"topic orders.requests.dlq does not exist on Kafka at {BOOTSTRAP} "
        "(create it first, e.g. with `pipeline topics apply`)"
    )


def test_all_topics_present_passes_quietly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    topics = ["orders.requests", "orders.requests.dlq", "logs"]

    with caplog.at_level(logging.WARNING, logger="pipeline.processing"):
        _check(monkeypatch, FakeAdmin(topics), _processor("orders.requests"))

    assert caplog.text == ""


def test_a_missing_logs_topic_is_a_warning_at_the_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    # The processor ran, and its Kafka log lines were lost one by one, unseen.
    topics = ["orders.requests", "orders.requests.dlq"]

    with caplog.at_level(logging.WARNING, logger="pipeline.processing"):
        _check(monkeypatch, FakeAdmin(topics), _processor("orders.requests"))

    assert caplog.messages == [
        f"the logs topic logs does not exist on Kafka at {BOOTSTRAP}: this processor's log "
        "lines are not shipped (create it, e.g. with `pipeline topics apply`)"
    ]


def test_kafka_not_answering_is_worded_like_the_other_commands(monkeypatch: pytest.MonkeyPatch):
    clock = VirtualClock()  # the check waits its whole timeout, virtually
    monkeypatch.setattr("pipeline.topics.admin.time", clock)
    monkeypatch.setattr("pipeline.topics.admin.port_answers", lambda *args, **kwargs: False)
    with pytest.raises(PipelineError) as raised:
        _check(
            monkeypatch, FakeAdmin([], answers=False, clock=clock), _processor("orders.requests")
        )

    assert str(raised.value).startswith(f"Kafka at {BOOTSTRAP} does not answer (")
