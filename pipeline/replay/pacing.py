"""How fast a replay sends: as fast as possible, at a fixed rate, or by the recorded timestamps.

Pure: :class:`Schedule` says when each message is due (seconds after the replay started); the
replayer waits for that moment. :class:`RecordedOrder` says in which order ``--speed`` sends a
recording: its recorded partitions merged by timestamp (:func:`in_recorded_order` for messages
in memory). ``--rate`` and ``--speed`` as typed on the command line are read by
:func:`parse_rate` and :func:`parse_speed`.
"""

from __future__ import annotations

import heapq
import math
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pipeline.errors import PipelineError

if TYPE_CHECKING:  # not imported at run time: `pipeline --help` imports this module
    from pipeline.replay.recording import ProducibleMessage

__all__ = [
    "Pacing",
    "RecordedOrder",
    "Schedule",
    "in_recorded_order",
    "parse_rate",
    "parse_speed",
]


@dataclass(frozen=True)
class Pacing:
    """How fast to send; as fast as possible when both are None."""

    #: Messages per second (``--rate 500/s``).
    rate_per_s: float | None = None
    #: How much faster than recorded, by the recorded timestamps (``--speed 10x``; 1 = as
    #: recorded, 0.5 = twice as slow).
    speed: float | None = None

    def __post_init__(self) -> None:
        if self.rate_per_s is not None and self.speed is not None:
            raise PipelineError("choose one pacing: --rate or --speed, not both")
        for name, value in (("rate", self.rate_per_s), ("speed", self.speed)):
            if value is not None and not value > 0:
                raise PipelineError(f"--{name} must be above 0, got {value:g}")


class Schedule:
    """When each message of a replay is due, in seconds after the replay started.

    - by rate: message ``n`` (from 0) at ``n / rate``;
    - by speed: at (its timestamp - the first timestamp) / 1000 / speed. Timestamps are made
      monotonic first (a message stamped before one already sent is due at once, after it),
      and a message without one is due with the message before it. The messages are taken in
      the order given: a recording of several partitions follows its timestamps when given in
      :class:`RecordedOrder` (which a replay of a file does).
    """

    def __init__(self, pacing: Pacing | None) -> None:
        self._rate = None if pacing is None else pacing.rate_per_s
        self._speed = None if pacing is None else pacing.speed
        self._count = 0
        self._first_ms: int | None = None
        self._latest_ms: int | None = None

    @property
    def paced(self) -> bool:
        """Whether messages have due times at all (False: as fast as possible)."""
        return self._rate is not None or self._speed is not None

    def due_s(self, timestamp_ms: int | None) -> float:
        """When the next message, stamped ``timestamp_ms``, is due; 0.0 when not paced."""
        index = self._count
        self._count += 1
        if self._rate is not None:
            return index / self._rate
        if self._speed is None:
            return 0.0
        if timestamp_ms is not None:
            if self._first_ms is None:
                self._first_ms = timestamp_ms
            if self._latest_ms is None or timestamp_ms > self._latest_ms:
                self._latest_ms = timestamp_ms
        if self._first_ms is None or self._latest_ms is None:
            return 0.0
        return (self._latest_ms - self._first_ms) / 1000 / self._speed


#: A message without a timestamp, in :class:`RecordedOrder`'s arrays (below any clamped one).
_NO_STAMP = -(2**63)
_LOWEST_STAMP = _NO_STAMP + 1
_HIGHEST_STAMP = 2**63 - 1


class RecordedOrder:
    """The order ``--speed`` sends a recording in: its recorded partitions merged by timestamp.

    Messages are added in file order (:meth:`add`: the topic and partition they were recorded
    at, and their timestamp); iterating gives their indexes (0 for the first added) in the
    sending order: a k-way merge of the recorded partitions that only ever compares the next
    message of each partition, taking the one stamped earliest (ties: the one added first).

    - Each partition's own order is always kept: a message stamped before the one before it
      in its partition (its timestamps go backwards) comes right after it, and is then due at
      once (:class:`Schedule`).
    - A message without a timestamp comes right after the message before it in its partition
      (due with it); those a partition starts with come first, in file order.

    So partitions recorded one after another (as ``pipeline record`` writes a topic with
    history) are interleaved again as their messages were stamped. Memory: two arrays of 8
    bytes a message. A timestamp beyond 64 bits (a file written by hand) is ordered as the
    nearest 64-bit one; Kafka has none.
    """

    def __init__(self) -> None:
        #: Per recorded (topic, partition): its timestamps and the indexes of its messages.
        self._partitions: dict[tuple[str, int], tuple[array[int], array[int]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, topic: str, partition: int, timestamp_ms: int | None) -> None:
        """The next message of the recording (index ``len(self)``)."""
        place = (topic, partition)
        found = self._partitions.get(place)
        if found is None:
            found = self._partitions[place] = (array("q"), array("q"))
        stamps, indexes = found
        if timestamp_ms is None:
            stamps.append(_NO_STAMP)
        else:
            stamps.append(min(max(timestamp_ms, _LOWEST_STAMP), _HIGHEST_STAMP))
        indexes.append(self._count)
        self._count += 1

    @property
    def start_ms(self) -> int | None:
        """The timestamp of the first stamped message sent in this order (the earliest of each
        partition's first timestamp), where ``--speed``'s clock starts; None without any."""
        firsts = [
            next((stamp for stamp in stamps if stamp != _NO_STAMP), None)
            for stamps, _ in self._partitions.values()
        ]
        return min((stamp for stamp in firsts if stamp is not None), default=None)

    def __iter__(self) -> Iterator[int]:
        """The indexes of the messages added, in the sending order."""
        merged = heapq.merge(
            *(_keyed(stamps, indexes) for stamps, indexes in self._partitions.values())
        )
        return (index for _, _, index in merged)


def _keyed(stamps: array[int], indexes: array[int]) -> Iterator[tuple[int, int, int]]:
    """One partition's messages, in its order, as ``(timestamp, tie, index)``: what the merge
    compares, then the index. A message without a timestamp has the key of the message
    before it (so it comes right after it); at the start, the lowest, in file order."""
    stamp, tie = _NO_STAMP, -1
    for own, index in zip(stamps, indexes, strict=True):
        if own != _NO_STAMP:
            stamp, tie = own, index
        elif stamp == _NO_STAMP:  # nothing stamped before it in its partition yet
            tie = index
        yield stamp, tie, index


Message = TypeVar("Message", bound="ProducibleMessage")


def in_recorded_order(messages: Sequence[Message]) -> list[Message]:
    """``messages`` (a recording, in file order) in :class:`RecordedOrder`: the order
    ``--speed`` sends a recording of several partitions in."""
    order = RecordedOrder()
    for message in messages:
        order.add(message.topic, message.partition, message.timestamp_ms)
    return [messages[index] for index in order]


#: ``--rate``: a number, then ``/s`` or nothing; ``--speed``: a number, then ``x`` or nothing.
_RATE = re.compile(r"(.*?)\s*(?:/\s*s)?")
_SPEED = re.compile(r"(.*?)\s*x?", re.IGNORECASE)


def _above_zero(text: str, form: re.Pattern[str]) -> float | None:
    """The number of ``text`` (in ``form``) as ``float()`` reads it (``1e3``, ``.5``), when it
    is a finite one above 0; else ``None``."""
    found = form.fullmatch(text.strip())
    try:
        number = float(found.group(1)) if found is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def parse_rate(text: str) -> float:
    """``--rate``: ``500/s``, ``500`` or ``1e3/s`` (messages per second)."""
    rate = _above_zero(text, _RATE)
    if rate is None:
        raise PipelineError(f"--rate takes messages per second above 0, like 500/s; got {text!r}")
    return rate


def parse_speed(text: str) -> float:
    """``--speed``: ``10x``, ``10``, ``0.5x`` or ``1e3x`` (times as fast as recorded)."""
    speed = _above_zero(text, _SPEED)
    if speed is None:
        raise PipelineError(
            f"--speed takes a factor above 0, like 10x (or 0.5x for slower); got {text!r}"
        )
    return speed
