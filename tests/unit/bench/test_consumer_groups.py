"""bench/consumer_groups.py: a stable group's members, and a coordinator that is not ready yet
read as 'ask again' rather than a failure."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException

from bench.consumer_groups import stable_members


@dataclass
class Described:
    group_id: str
    state: ConsumerGroupState
    members: list[str]


class Admin:
    """Answers describe_consumer_groups with the given results or errors, by group."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    def describe_consumer_groups(self, groups: list[str]) -> dict[str, Future[Any]]:
        futures: dict[str, Future[Any]] = {}
        for name in groups:
            future: Future[Any] = Future()
            answer = self.answers[name]
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
            futures[name] = future
        return futures


def test_members_of_stable_groups_and_zero_for_the_others():
    admin = Admin(
        {
            "a": Described("a", ConsumerGroupState.STABLE, ["m1", "m2"]),
            "b": Described("b", ConsumerGroupState.PREPARING_REBALANCING, ["m1"]),
            "c": Described("c", ConsumerGroupState.EMPTY, []),
        }
    )
    assert stable_members(admin, ["a", "b", "c"]) == {"a": 2, "b": 0, "c": 0}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    ],
)
def test_a_coordinator_not_ready_is_none(code: int):
    admin = Admin(
        {
            "a": Described("a", ConsumerGroupState.STABLE, ["m1"]),
            "b": KafkaException(KafkaError(code)),
        }
    )
    assert stable_members(admin, ["a", "b"]) is None  # type: ignore[arg-type]


def test_any_other_error_is_raised():
    admin = Admin({"a": KafkaException(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))})
    with pytest.raises(KafkaException):
        stable_members(admin, ["a"])  # type: ignore[arg-type]
