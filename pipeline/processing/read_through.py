"""How far a consumer group has handled a topic, as a moment: every record appended before it.

Offsets say where a group is in a topic, not when. To compare its progress with a time (a saga
step's deadline), the end offsets of the topic's partitions are sampled, each sample with the
moment just before it was asked for. Once the group has handled every record below a sample's
end offsets on every partition, every record appended before that moment has been handled:
that moment is the group's *read-through time*. :class:`ReadThrough` keeps the samples and
gives the latest such moment; it is pure (the Kafka side is
:class:`pipeline.processing.group_progress.GroupProgress`, the broker-free one the test driver).

What runs a processor sets :attr:`pipeline.processing.processor.Processor.progress` to a
:class:`TopicProgress`; the saga orchestrator fires a step's timeout only once the replies
appended before its deadline have been read, so a reply that came in time wins over the
timeout even when the orchestrator was down or behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["OffsetSample", "ReadThrough", "TopicProgress"]


class TopicProgress(Protocol):
    """How far a processor's consumer group has handled a topic."""

    def read_through(self, topic: str) -> datetime | None:
        """The latest moment before which every record appended to ``topic`` has been handled
        by the group; ``None`` while that is not known (before the first sample is passed)."""
        ...


@dataclass(frozen=True)
class OffsetSample:
    """A topic's end offset of each partition, asked for at ``taken_at`` (or just after)."""

    taken_at: datetime
    ends: Mapping[int, int]

    def passed(self, done: Mapping[int, int]) -> bool:
        """Whether ``done`` (per partition, the offset below which every record is handled)
        reaches this sample's end on every partition."""
        return all(done.get(partition, -1) >= end for partition, end in self.ends.items())


class ReadThrough:
    """The samples of one topic not passed yet, and the read-through time so far.

    End offsets only grow, so a sample passed means every earlier one is too: when more than
    ``keep`` samples wait (a group far behind), the oldest are dropped, which only makes the
    time found later no earlier than it would have been.
    """

    def __init__(self, keep: int = 600) -> None:
        self._waiting: deque[OffsetSample] = deque(maxlen=keep)
        self.time: datetime | None = None

    def sample(self, taken_at: datetime, ends: Mapping[int, int]) -> None:
        """Record the end offsets asked for at ``taken_at`` (after the samples before it)."""
        self._waiting.append(OffsetSample(taken_at, dict(ends)))

    def advance(self, done: Mapping[int, int]) -> datetime | None:
        """Pass the samples ``done`` reaches; returns the read-through time."""
        while self._waiting and self._waiting[0].passed(done):
            self.time = self._waiting.popleft().taken_at
        return self.time
