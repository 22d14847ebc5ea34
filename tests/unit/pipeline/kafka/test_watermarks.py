"""The one watermark reader: not-ready errors are waited out, anything else is a clear error."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.errors import PipelineError
from pipeline.kafka import watermarks
from pipeline.kafka.watermarks import read_watermarks


class ScriptedConsumer:
    """Answers each get_watermark_offsets with the next of ``answers`` (raising errors)."""

    def __init__(self, *answers: tuple[int, int] | KafkaError) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int, float]] = []

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        self.asked.append((partition.topic, partition.partition, timeout))
        answer = self.answers.pop(0)
        if isinstance(answer, KafkaError):
            raise KafkaException(answer)
        return answer


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(watermarks.time, "sleep", slept.append)
    return slept


def test_the_low_and_high_watermarks_of_the_asked_partition_are_returned(sleeps):
    consumer = ScriptedConsumer((3, 17))

    assert read_watermarks(consumer, "orders", 2, timeout_s=5.0) == (3, 17)
    assert consumer.asked == [("orders", 2, 5.0)]
    assert sleeps == []


def test_a_partition_without_a_leader_yet_is_asked_again_until_it_answers(sleeps):
    consumer = ScriptedConsumer(
        KafkaError(KafkaError.LEADER_NOT_AVAILABLE),
        KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART),
        (0, 4),
    )

    assert read_watermarks(consumer, "fresh", 0, timeout_s=5.0) == (0, 4)
    assert len(consumer.asked) == 3
    assert sleeps == [0.2, 0.2]


def test_a_partition_not_yet_in_the_clients_metadata_is_asked_again(sleeps):
    consumer = ScriptedConsumer(KafkaError(KafkaError._UNKNOWN_PARTITION), (0, 0))

    assert read_watermarks(consumer, "just-created", 2, timeout_s=5.0) == (0, 0)
    assert len(consumer.asked) == 2
    assert sleeps == [0.2]


def test_a_not_ready_error_past_the_deadline_is_a_pipeline_error_naming_the_partition(sleeps):
    consumer = ScriptedConsumer(KafkaError(KafkaError.LEADER_NOT_AVAILABLE))

    with pytest.raises(PipelineError, match="cannot read the offsets of fresh partition 1: "):
        read_watermarks(consumer, "fresh", 1, timeout_s=5.0, deadline=time.monotonic() - 1)
    assert sleeps == []


def test_any_other_error_is_a_pipeline_error_at_once(sleeps):
    consumer = ScriptedConsumer(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), (0, 1))

    with pytest.raises(PipelineError, match="cannot read the offsets of secret partition 0"):
        read_watermarks(consumer, "secret", 0, timeout_s=5.0)
    assert len(consumer.asked) == 1
    assert sleeps == []
