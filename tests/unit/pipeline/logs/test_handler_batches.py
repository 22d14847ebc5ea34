"""The log handler's producer keeps its batches within the logs topic's own size limit: the
broker refuses an oversized batch whole, so one record too large for a small limit lost the
records batched with it (an outside review: 11 records lost for one 400 kB line)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.logs import setup as logging_setup
from pipeline.settings import PipelineSettings
from pipeline.topics.plan import ActualTopic


def logs_topic(limit: str | None) -> ActualTopic:
    configs = {} if limit is None else {"max.message.bytes": limit}
    return ActualTopic("logs", 3, 1, configs, frozenset(configs))


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The options the handler's producer is built with."""
    options: dict[str, Any] = {}
    monkeypatch.setattr("pipeline.kafka.clients.build_admin", lambda kafka: object())
    monkeypatch.setattr(
        logging_setup, "build_producer", lambda kafka, **given: options.update(given)
    )
    return options


def describing(monkeypatch: pytest.MonkeyPatch, answer: Any) -> None:
    def describe(admin: object, names: list[str], **_: object) -> dict[str, ActualTopic]:
        if isinstance(answer, Exception):
            raise answer
        return {} if answer is None else {names[0]: answer}

    monkeypatch.setattr("pipeline.topics.admin.describe_cluster_topics", describe)


def test_a_logs_topic_with_a_small_limit_gets_batches_within_it(monkeypatch, made):
    describing(monkeypatch, logs_topic("262144"))

    logging_setup._kafka_producer_factory(PipelineSettings(), lambda error: None)

    assert made["batch.size"] == 262_144 * 9 // 10
    assert made["linger.ms"] == 50


@pytest.mark.parametrize(
    "answer",
    [logs_topic(None), logs_topic("2097152"), None, RuntimeError("Kafka does not answer")],
    ids=["no-limit-of-its-own", "a-limit-above-the-batches", "no-topic", "kafka-away"],
)
def test_otherwise_the_batches_are_librdkafkas_own(monkeypatch, made, answer):
    describing(monkeypatch, answer)

    logging_setup._kafka_producer_factory(PipelineSettings(), lambda error: None)

    assert "batch.size" not in made
    assert made["client.id"].endswith("-logs")
