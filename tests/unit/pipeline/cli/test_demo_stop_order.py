"""The demo stops its processes so that nothing writes an outbox row once the relay is gone:
the services and the saga orchestrator first, then the relay, once it has published what they
committed, and the log shipper last. (The relay stopped before the orchestrator, which fired a
step timeout 22 s after the Ctrl-C: 5 rows stayed unpublished, a saga stayed compensating.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

import pytest

from pipeline.cli.demo_sagas import SAGA_SERVICES
from pipeline.cli.demo_services import (
    PROCESSOR_NAME,
    RELAY_NAME,
    SHIPPER_NAME,
    STOP_ORDER,
    relay_publishing_last,
    start_in_order,
)


def test_every_process_is_stopped_once_the_relay_and_the_shipper_last() -> None:
    assert sorted(STOP_ORDER) == sorted(
        [PROCESSOR_NAME, *(name for name, _ in SAGA_SERVICES), RELAY_NAME, SHIPPER_NAME]
    )
    assert STOP_ORDER[-2:] == (RELAY_NAME, SHIPPER_NAME)
    # The orders service starts sagas, the orchestrator fires their timeouts: both stop before
    # the participants whose replies the timeouts wait for.
    assert STOP_ORDER[:2] == (PROCESSOR_NAME, "saga-orchestrator")


def test_an_interrupt_stops_them_in_the_stop_order() -> None:
    events: list[str] = []

    def starter(name: str) -> Callable[[], AbstractContextManager[str]]:
        @contextmanager
        def running() -> Iterator[str]:
            events.append(f"start {name}")
            try:
                yield name
            finally:
                events.append(f"stop {name}")

        return running

    with pytest.raises(KeyboardInterrupt), ExitStack() as stack:
        started = start_in_order(stack, {name: starter(name) for name in STOP_ORDER})
        assert started == {name: name for name in STOP_ORDER}
        raise KeyboardInterrupt

    assert events == [f"start {n}" for n in reversed(STOP_ORDER)] + [
        f"stop {n}" for n in STOP_ORDER
    ]


def test_a_starter_missing_is_refused_before_anything_starts() -> None:
    with ExitStack() as stack, pytest.raises(ValueError):
        start_in_order(stack, {RELAY_NAME: ExitStack})


class _Relay:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def __enter__(self) -> _Relay:
        return self

    def __exit__(self, *_: object) -> None:
        self.events.append("relay stopped")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_after_an_interrupt_the_relay_publishes_what_is_left_before_it_stops() -> None:
    events: list[str] = []
    left = iter([5, 2, 0])

    def unpublished() -> int:
        n = next(left)
        events.append(f"{n} left")
        return n

    clock = _Clock()
    with (
        pytest.raises(KeyboardInterrupt),
        relay_publishing_last(_Relay(events), unpublished, clock=clock, sleep=clock.sleep),
    ):
        raise KeyboardInterrupt

    assert events == ["5 left", "2 left", "0 left", "relay stopped"]


def test_the_final_round_is_bounded() -> None:
    events: list[str] = []
    clock = _Clock()

    with relay_publishing_last(
        _Relay(events), lambda: 5, bound_s=3.0, clock=clock, sleep=clock.sleep
    ):
        pass

    assert events == ["relay stopped"]
    assert 3.0 <= clock.now < 3.5


def test_a_second_interrupt_stops_the_relay_at_once() -> None:
    events: list[str] = []

    def unpublished() -> int:
        events.append("waited")
        return 5

    with (
        pytest.raises(KeyboardInterrupt),
        relay_publishing_last(_Relay(events), unpublished, sleep=lambda _s: None),
    ):
        try:
            raise KeyboardInterrupt  # the first Ctrl-C
        except KeyboardInterrupt:
            raise KeyboardInterrupt  # noqa: B904 (the second, while the services stop)

    assert events == ["relay stopped"]
