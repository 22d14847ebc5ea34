"""How several replay processes share a recording: each sends whole partitions (pure).

A partition's messages must arrive in the recorded order, and only one producer can promise
that: so every partition of a target topic belongs to exactly one process, which sends all
its messages, in file order. :class:`ProcessShares` says which process a message belongs to:

- with ``--preserve-partitions``, by its recorded partition;
- by key (the default), by the partition murmur2 gives its key among the target's partitions,
  the one the producer's partitioner (``murmur2_random``) then chooses; the messages of a key
  stay together and in order, and so do those of a partition;
- a message without a key, by its recorded partition modulo the target's partition count,
  the partition it is sent to (routing.py): the keyless messages of a partition keep their
  order too.

Partition ``p`` of a topic belongs to process ``(crc32(topic) + p) % processes``: the same
answer in every process, and a topic's partitions spread evenly over the processes.

:class:`LineRouter` does it for raw recording lines, and surveys the recording on the way.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable

import confluent_kafka

from pipeline.kafka.partitioner import partition_for
from pipeline.replay.recording import message_for_replay
from pipeline.replay.routing import RecordingSurvey

__all__ = ["LineRouter", "ProcessShares", "default_processes", "usable_cores"]

#: librdkafka's murmur2 partition of a key (confluent-kafka 2.13 and later; the same answer as
#: ``partition_for``, which tests/unit/pipeline/kafka/test_partitioner.py checks), in C.
_partition_of_key: Callable[[bytes, int], int] = getattr(confluent_kafka, "murmur2", partition_for)
#: Keys whose process is remembered per topic; beyond it the memo starts again (a recording
#: with a fresh key per message would otherwise keep every key).
_KEYS_REMEMBERED = 200_000


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_processes(partitions: int, cores: int | None = None) -> int:
    """As many processes as cores, and no more than the partitions to share (at least 1)."""
    return max(1, min(usable_cores() if cores is None else cores, partitions))


class ProcessShares:
    """Which of ``processes`` processes sends each message (see the module docstring)."""

    def __init__(self, processes: int, *, preserve_partitions: bool) -> None:
        if processes < 1:
            raise ValueError(f"a replay needs at least one process, got {processes}")
        self.processes = processes
        self._preserve = preserve_partitions
        self._first: dict[str, int] = {}
        self._by_key: dict[str, dict[str | bytes, int]] = {}

    def _first_of(self, topic: str) -> int:
        first = self._first.get(topic)
        if first is None:
            first = self._first[topic] = zlib.crc32(topic.encode("utf-8")) % self.processes
        return first

    def of_partition(self, topic: str, partition: int) -> int:
        """The process that sends partition ``partition`` of ``topic``."""
        return (self._first_of(topic) + partition) % self.processes

    def of_message(
        self,
        topic: str,
        partition: int,
        key: str | bytes | None,
        line: int,
        partitions: int | None,
    ) -> int:
        """The process that sends the message recorded at ``partition`` with ``key``, on line
        ``line``, into ``topic`` (which has ``partitions``; None when it does not exist, and the
        replay will not go ahead)."""
        if self._preserve:
            return self.of_partition(topic, partition)
        if partitions is None:  # nothing is sent: the target is missing
            return line % self.processes
        if key is None:
            return self.of_partition(topic, partition % partitions)
        memo = self._by_key.get(topic)
        if memo is None:
            memo = self._by_key[topic] = {}
        owner = memo.get(key)
        if owner is None:
            if len(memo) >= _KEYS_REMEMBERED:
                memo.clear()
                memo = self._by_key[topic] = {}
            raw = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
            owner = memo[key] = self.of_partition(topic, _partition_of_key(raw, partitions))
        return owner


class LineRouter:
    """Which process sends each raw line of a recording, and the recording's survey.

    Every line is read whole here, once, which checks it (:class:`RecordingError` naming the
    first that is not a message): the processes then only read their own lines to send them.
    ``partitions_of(topic)`` gives a target topic's partition count (None when it does not
    exist), needed to place messages by key; not asked with ``preserve_partitions``.
    """

    def __init__(
        self,
        shares: ProcessShares,
        *,
        topic: str | None,
        preserve_partitions: bool,
        partitions_of: Callable[[str], int | None],
        source: str,
    ) -> None:
        self._shares = shares
        self._topic = topic
        self._preserve = preserve_partitions
        self._partitions_of = partitions_of
        self._counts: dict[str, int | None] = {}
        self._source = source
        self.survey = RecordingSurvey()

    def owner(self, raw: bytes, number: int, *, surveying: bool = True) -> int | None:
        """The process that sends line ``number``; None for a blank line."""
        message = message_for_replay(raw, self._source, number)
        if message is None:
            return None
        partition = message.partition
        target = self._topic if self._topic is not None else message.topic
        if surveying:
            self.survey.add(message, target)
        count = None
        if not self._preserve:
            counts = self._counts
            if target in counts:
                count = counts[target]
            else:
                count = counts[target] = self._partitions_of(target)
        return self._shares.of_message(target, partition, message.key, number, count)
