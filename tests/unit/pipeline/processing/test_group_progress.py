"""GroupProgress's shutdown, which needs no broker (the rest is tested on Kafka, in
tests/integration/pipeline/processing/test_group_progress.py)."""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError, KafkaException

from pipeline.processing.group_progress import GroupProgress


class _SlowConsumer:
    """A consumer whose questions take a while, counting closes."""

    def __init__(self, asking: threading.Event, answer: threading.Event) -> None:
        self.asking, self.answer, self.closed = asking, answer, 0

    def list_topics(self, topic: str, timeout: float) -> object:
        self.asking.set()
        self.answer.wait(10)
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "away"))

    def close(self) -> None:
        self.closed += 1


def test_closing_during_a_refresh_never_waits_for_it_and_the_consumer_is_closed_once():
    asking, answer = threading.Event(), threading.Event()
    made: list[_SlowConsumer] = []

    def make() -> _SlowConsumer:
        made.append(_SlowConsumer(asking, answer))
        return made[-1]

    progress = GroupProgress(make)  # type: ignore[arg-type]
    progress.read_through("replies")
    refreshing = threading.Thread(target=progress.refresh)
    refreshing.start()
    assert asking.wait(10)

    progress.close()  # Kafka has not answered the refresh yet: returns at once
    assert made[0].closed == 0
    answer.set()
    refreshing.join(10)

    assert [consumer.closed for consumer in made] == [1]
    progress.refresh()  # after close: asks nothing, makes no consumer
    assert len(made) == 1
