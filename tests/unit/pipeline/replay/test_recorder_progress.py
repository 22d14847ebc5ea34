"""The recorder reports every poll to ``on_progress``, an empty one as 0, so that a live rate
shown from it falls while nothing comes."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.replay import recorder
from pipeline.replay.bounds import RecordingBounds


class Enough(Exception):
    """Ends the otherwise endless recording of the test."""


class IdleConsumer:
    """A consumer of a topic nobody writes to: its polls come back empty."""

    def __init__(self, polls: int) -> None:
        self.polls = polls

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        if not self.polls:
            raise Enough
        self.polls -= 1
        return []


def test_an_empty_poll_is_reported_as_none_kept() -> None:
    reported: list[int] = []
    bounds = RecordingBounds(starts={("orders", 0): 0})

    with pytest.raises(Enough):
        list(recorder._read(IdleConsumer(polls=3), bounds, reported.append))  # type: ignore[arg-type]

    assert reported == [0, 0, 0]
