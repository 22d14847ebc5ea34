"""Where each replayed message goes: its topic and partition (pure).

- the topic: the recorded one, or the one given (``--topic``) for every message;
- the partition: the recorded one (``--preserve-partitions``; the target must have that
  partition), or none, so that the producer's partitioner places it by its key with murmur2,
  Kafka's default: a key lands where any other Kafka client would put it, and the messages of
  one key keep their order. A message without a key, which a producer's partitioner would
  spread at random, goes to its recorded partition, modulo the target's partition count: the
  keyless messages of a partition keep their recorded order, and into a topic of as many
  partitions the partitions of a topic written by key come back as they were, whether one
  process sends or several (each target partition has one sender, shares.py).

:func:`survey` reads a recording once to say what a replay needs (topics, partitions) before
anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.errors import PipelineError
from pipeline.plurals import counted
from pipeline.replay.recording import ProducibleMessage

__all__ = [
    "BY_KEY",
    "RecordingSurvey",
    "ReplayError",
    "problems",
    "survey",
    "target_partition",
    "target_topic",
]

#: No partition given to the producer: its partitioner (murmur2 of the key) chooses.
BY_KEY = -1


class ReplayError(PipelineError):
    """A replay that cannot be done as asked (a missing topic, a missing partition)."""


def target_topic(message: ProducibleMessage, topic: str | None) -> str:
    """The topic ``message`` is replayed into: ``topic`` when given, else its own."""
    return topic if topic is not None else message.topic


def target_partition(message: ProducibleMessage, *, preserve: bool, partitions: int) -> int:
    """The partition to produce ``message`` to, or :data:`BY_KEY` (see the module docstring).

    ``partitions`` is the target topic's partition count; with ``preserve`` a recorded
    partition beyond it is a :class:`ReplayError`.
    """
    if not preserve:
        return BY_KEY if message.key is not None else message.partition % partitions
    if not 0 <= message.partition < partitions:
        raise ReplayError(
            f"--preserve-partitions: the recording has partition {message.partition} of "
            f"{message.topic}, and the target topic has {counted(partitions, 'partition')}"
        )
    return message.partition


@dataclass
class RecordingSurvey:
    """What a recording holds, as far as a replay needs to know."""

    messages: int = 0
    #: Per target topic: how many partitions it needs to keep the recorded ones.
    partitions_needed: dict[str, int] = field(default_factory=dict)
    #: The latest recorded timestamp.
    last_ms: int | None = None
    #: The timestamp of the first message (in file order) that has one: where ``--speed``'s
    #: clock starts (pacing.Schedule), unless the messages are sent in another order (a file's
    #: replay by time replaces it by pacing.RecordedOrder.start_ms: the first sent).
    start_ms: int | None = None
    #: The first recorded ``(topic, partition)`` below 0, which no topic has.
    below_zero: tuple[str, int] | None = None

    def add(self, message: ProducibleMessage, target: str) -> None:
        """Count ``message``, sent to ``target``."""
        self.messages += 1
        needed = self.partitions_needed
        partition = message.partition
        if needed.get(target, 0) <= partition:
            needed[target] = partition + 1
        elif partition < 0:  # the target is still needed; a partition, only by key
            needed.setdefault(target, 0)
            if self.below_zero is None:
                self.below_zero = (message.topic, partition)
        ts = message.timestamp_ms
        if ts is not None:
            if self.start_ms is None:
                self.start_ms = ts
            if self.last_ms is None or ts > self.last_ms:
                self.last_ms = ts

    @property
    def paced_s(self) -> float:
        """How long ``--speed 1x`` takes to send it, in seconds: from the first message's
        timestamp (:attr:`start_ms`) to the latest one. pacing.Schedule sends a message
        stamped before one already sent at once, so timestamps earlier than the first message's
        add no time (5000, 7000, 1000 take 2 s, not the 6 s between the earliest and the
        latest)."""
        if self.start_ms is None or self.last_ms is None:
            return 0.0
        return (self.last_ms - self.start_ms) / 1000


def survey(messages: Iterable[ProducibleMessage], *, topic: str | None = None) -> RecordingSurvey:
    """Count the messages, and find the target topics and partitions they need."""
    found = RecordingSurvey()
    add = found.add
    for message in messages:
        add(message, topic if topic is not None else message.topic)
    return found


def problems(
    found: RecordingSurvey, partition_counts: Mapping[str, int], *, preserve: bool
) -> list[str]:
    """Why the replay cannot go ahead: target topics that do not exist and, with ``preserve``,
    those with fewer partitions than recorded, and a recorded partition below 0. Empty when it
    can."""
    reasons = []
    if preserve and found.below_zero is not None:
        topic, partition = found.below_zero
        reasons.append(
            f"the recording has partition {partition} of {topic}, and partitions are numbered "
            "from 0 (--preserve-partitions)"
        )
    for target, needed in sorted(found.partitions_needed.items()):
        count = partition_counts.get(target)
        if count is None:
            reasons.append(f"topic {target} does not exist")
        elif preserve and count < needed:
            reasons.append(
                f"topic {target} has {counted(count, 'partition')} and the recording needs "
                f"{needed} "
                "(--preserve-partitions)"
            )
    return reasons
