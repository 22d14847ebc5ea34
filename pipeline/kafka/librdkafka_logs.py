"""librdkafka's own log lines through Python logging, summarised.

Left alone, librdkafka writes each of its log lines to stderr from its own threads
(``%3|1700000000.123|FAIL|rdkafka#producer-1| ...``): while Kafka is away, hundreds of them.
The producers and consumers built by :mod:`pipeline.kafka.clients` hand them to the logger
:data:`LOGGER_NAME` instead (served when the client is polled), so they land where every other
line goes, and :class:`RepeatSummary` keeps them few: the first line of each kind passes, its
repeats are counted, and the next one let through after ``every_s`` says how many were held
back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LOGGER_NAME", "RepeatSummary", "TransientRetries", "librdkafka_logger"]

LOGGER_NAME = "pipeline.kafka.librdkafka"
_DIGITS = re.compile(r"\d+")
_MAX_KINDS = 1000


@dataclass
class _Seen:
    since: float
    held_back: int = 0


class RepeatSummary(logging.Filter):
    """Let the first record of each kind through, then one per ``every_s`` with the count of
    those held back meanwhile. A record's kind is its message with every number blanked (so
    ``after 3ms`` and ``after 250ms`` are the same kind)."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self._clock = clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        kind = _DIGITS.sub("#", message)
        now = self._clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen.since < self.every_s:
                seen.held_back += 1
                return False
            if len(self._seen) >= _MAX_KINDS:
                self._seen.clear()
            self._seen[kind] = _Seen(now)
        if seen is not None and seen.held_back:
            record.msg = f"{message} ({seen.held_back:,} more like it held back)"
            record.args = ()
        return True


class TransientRetries(logging.Filter):
    """Demote to INFO the warnings of a wait librdkafka ends by itself: a broker just started
    still loading its coordinator ("Failed to acquire idempotence PID from broker ...: Broker:
    Coordinator load in progress: retrying"). Printed among a command's output, it read as a
    failure of a run in which every event was acknowledged."""

    _MARKERS = ("Coordinator load in progress",)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING:
            message = record.getMessage()
            if message.endswith("retrying") and any(m in message for m in self._MARKERS):
                record.levelno, record.levelname = logging.INFO, "INFO"
                # The logger let it through as a warning: as INFO, only where INFO is shown.
                return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


_logger = logging.getLogger(LOGGER_NAME)
_logger.addFilter(TransientRetries())
_logger.addFilter(RepeatSummary())


def librdkafka_logger() -> logging.Logger:
    """The logger librdkafka's lines go to (pass as the client's ``logger`` setting)."""
    return _logger
