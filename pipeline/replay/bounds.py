"""Where a recording starts and stops, and which messages it keeps (pure: no Kafka here).

A recording reads every partition of its topics from a start to a stop:

- **start** (:data:`Start`): ``"beginning"`` (the oldest message kept), ``"end"`` (only what
  arrives from now on), :class:`FromTime` (the first message stamped at or after a time) or
  :class:`FromGroup` (where a consumer group committed; from the beginning where it has not);
- **stop** (:class:`Stop`), whichever comes first: the end offsets seen at start
  (``at_end``), the first message stamped at or after ``until_ms`` in each partition (and, once
  the wall clock is past ``until_ms``, the end offsets of that moment), ``max_messages``; with
  none of them, it records until it is interrupted.

:class:`RecordingBounds` applies them message by message; the recorder (recorder.py) feeds it
what it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from pipeline.errors import PipelineError

__all__ = [
    "FromGroup",
    "FromTime",
    "Partition",
    "RecordingBounds",
    "Start",
    "Stop",
    "parse_time",
    "start_of",
]

#: A partition of a topic: ``(topic, partition)``.
Partition = tuple[str, int]


@dataclass(frozen=True)
class FromTime:
    """Start at each partition's first message stamped at or after ``timestamp_ms``."""

    timestamp_ms: int


@dataclass(frozen=True)
class FromGroup:
    """Start where consumer group ``group`` committed (the beginning where it has not)."""

    group: str


Start = Literal["beginning", "end"] | FromTime | FromGroup


@dataclass(frozen=True)
class Stop:
    """When a recording stops: whichever comes first; with none set, only when interrupted."""

    #: At the end offsets seen when the recording started.
    at_end: bool = False
    #: At each partition's first message stamped at or after this time (ms since the epoch);
    #: and once the wall clock is past it, at the end offsets of that moment.
    until_ms: int | None = None
    #: After this many messages.
    max_messages: int | None = None

    def __post_init__(self) -> None:
        if self.max_messages is not None and self.max_messages < 1:
            raise PipelineError(f"--max must be at least 1, got {self.max_messages}")

    @property
    def unbounded(self) -> bool:
        """Whether only an interruption stops the recording."""
        return not self.at_end and self.until_ms is None and self.max_messages is None


@dataclass
class RecordingBounds:
    """The start and stop applied to the messages read, partition by partition.

    ``starts`` is where each partition's reading starts (a real offset); ``ends`` is where it
    stops (one past the last offset kept), given for ``Stop.at_end`` or later by
    :meth:`close_at` once the wall clock passed ``Stop.until_ms``.
    """

    starts: dict[Partition, int]
    stop: Stop = field(default_factory=Stop)
    ends: dict[Partition, int] | None = None
    kept: int = 0
    done: set[Partition] = field(default_factory=set)
    positions: dict[Partition, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = dict(self.starts)
        if self.ends is not None:
            self._close_reached()

    def keep(self, partition: Partition, offset: int, timestamp_ms: int | None) -> bool:
        """Whether the message at ``offset`` of ``partition`` is recorded.

        A message at or past its partition's end, or stamped at or after ``until_ms``, ends
        its partition and is not recorded; once ``max_messages`` are kept, nothing more is.
        """
        if partition in self.done or self.full:
            return False
        end = None if self.ends is None else self.ends.get(partition)
        until = self.stop.until_ms
        if (end is not None and offset >= end) or (
            until is not None and timestamp_ms is not None and timestamp_ms >= until
        ):
            self.done.add(partition)
            return False
        self.kept += 1
        self.positions[partition] = offset + 1
        if end is not None and offset + 1 >= end:
            self.done.add(partition)
        return True

    def reached_end(self, partition: Partition, offset: int) -> None:
        """The reader reports the end of what ``partition`` holds now, at ``offset``."""
        self.positions[partition] = max(self.positions.get(partition, 0), offset)
        end = None if self.ends is None else self.ends.get(partition)
        if end is not None and offset >= end:
            self.done.add(partition)

    def clock_passed_until(self, now_ms: int) -> bool:
        """Whether the wall clock passed ``until_ms`` and the end offsets are not set yet:
        then the reader reads them and hands them to :meth:`close_at`."""
        until = self.stop.until_ms
        return until is not None and self.ends is None and now_ms >= until

    def close_at(self, ends: dict[Partition, int]) -> None:
        """Stop each partition at ``ends`` (one past the last offset to keep)."""
        self.ends = dict(ends)
        self._close_reached()

    def _close_reached(self) -> None:
        assert self.ends is not None
        for partition, end in self.ends.items():
            if self.positions.get(partition, 0) >= end:
                self.done.add(partition)

    @property
    def full(self) -> bool:
        """Whether ``max_messages`` are kept."""
        limit = self.stop.max_messages
        return limit is not None and self.kept >= limit

    @property
    def finished(self) -> bool:
        """Whether the recording is complete: enough messages, or every partition done."""
        return self.full or self.done >= set(self.starts)


def start_of(
    *, beginning: bool = False, time_ms: int | None = None, group: str | None = None
) -> Start:
    """The start asked for by at most one of ``--from-beginning``, ``--from-time`` and
    ``--from-group``; ``"end"`` (what arrives from now on) when none is given."""
    given = [
        name
        for name, asked in (
            ("--from-beginning", beginning),
            ("--from-time", time_ms is not None),
            ("--from-group", group is not None),
        )
        if asked
    ]
    if len(given) > 1:
        raise PipelineError(f"choose one place to start: {' or '.join(given)}, not more than one")
    if beginning:
        return "beginning"
    if time_ms is not None:
        return FromTime(time_ms)
    if group is not None:
        if not group.strip():
            raise PipelineError("--from-group needs a group name")
        return FromGroup(group)
    return "end"


_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_time(text: str, *, now: datetime) -> int:
    """A point in time given on the command line, in ms since the epoch.

    Accepted: milliseconds since the epoch (``1764690000000``); an ISO 8601 date or date and
    time (``2025-12-02``, ``2025-12-02T14:30:00Z``, ``2025-12-02 14:30+01:00``), in local time
    at that date when it names no zone (see :func:`_local_ms`); or a time before ``now``
    (``-30s``, ``-15m``, ``-2h``, ``-1d``). Anything else, or a time before 1970 or after 9999,
    is a :class:`PipelineError` that says so.
    """
    try:
        ms = _parsed_ms(text, now)
    except (OverflowError, OSError):  # past what datetime holds, or the platform's clock
        ms = -1
    if not 0 <= ms <= _LATEST_MS:
        raise PipelineError(f"not a time: {text!r} is out of range (1970 to 9999)")
    return ms


def _parsed_ms(text: str, now: datetime) -> int:
    value = text.strip()
    if value.isdigit():
        return int(value)
    relative = _RELATIVE.match(value)
    if relative is not None:
        amount = float(relative.group(1)) * _UNIT_S[relative.group(2)]
        return _ms(now - timedelta(seconds=amount))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PipelineError(
            f"not a time: {text!r} (use 2025-12-02T14:30:00Z, -15m or ms since the epoch)"
        ) from None
    if moment.tzinfo is None:
        return _local_ms(moment)
    return _ms(moment)


def _local_ms(naive: datetime) -> int:
    """A date and time without a zone, in ms since the epoch: local time (the system's zone,
    ``TZ``) with the offset in force at that date, not today's (June is daylight saving time
    where December is not).

    It is the first moment the local clock shows it, or, where the clock never shows it, the
    first moment it shows a later time: a time shown twice (the hour repeated when the clocks
    go back) is the first of the two, and a time skipped (the hour the clocks go forward) is
    the moment they went forward; so a date alone is the start of that day, even where a day
    starts at 01:00. An offset in the text (``+02:00``) says which is meant.
    """
    # fold 0 and 1: the two readings of a time shown twice; around a time skipped, the
    # moments just before and just after the skip (both shown as other times). Near the ends
    # of what datetime holds one reading may fall outside (9999-12-31 reads fold 1 as year
    # 10000): the other is then the time.
    moments = []
    for fold in (0, 1):
        try:
            moments.append(naive.replace(fold=fold).astimezone())
        except (ValueError, OverflowError):  # "year 10000 is out of range"
            continue
    if not moments:
        raise OverflowError(f"{naive} is out of range")
    if len(moments) == 1:
        return _ms(moments[0])
    shown = [moment for moment in moments if moment.replace(tzinfo=None) == naive]
    if shown:
        return min(_ms(moment) for moment in shown)
    # Skipped: the clock jumps between the two moments; find the second it does.
    before, after = sorted(int(moment.timestamp()) for moment in moments)
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle) >= naive:
            after = middle
        else:
            before = middle
    return after * 1000


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


#: The last millisecond a time may name (Python's datetime ends with the year 9999).
_LATEST_MS = _ms(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))
