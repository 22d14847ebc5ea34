"""How fast a replay sends: as fast as possible, at a fixed rate, or by the recorded timestamps.

Pure: :class:`Schedule` says when each message is due (seconds after the replay started); the
replayer waits for that moment. ``--rate`` and ``--speed`` as typed on the command line are read
by :func:`parse_rate` and :func:`parse_speed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import PipelineError

__all__ = ["Pacing", "Schedule", "parse_rate", "parse_speed"]


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
      and a message without one is due with the message before it. Messages of several
      partitions can be stamped slightly out of order; their order in the recording is kept.
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


_RATE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*s)?$")
_SPEED = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*x?$", re.IGNORECASE)


def parse_rate(text: str) -> float:
    """``--rate``: ``500/s`` or ``500`` (messages per second)."""
    found = _RATE.match(text.strip())
    if found is None or not float(found.group(1)) > 0:
        raise PipelineError(f"--rate takes messages per second above 0, like 500/s; got {text!r}")
    return float(found.group(1))


def parse_speed(text: str) -> float:
    """``--speed``: ``10x``, ``10`` or ``0.5x`` (times as fast as recorded)."""
    found = _SPEED.match(text.strip())
    if found is None or not float(found.group(1)) > 0:
        raise PipelineError(
            f"--speed takes a factor above 0, like 10x (or 0.5x for slower); got {text!r}"
        )
    return float(found.group(1))
