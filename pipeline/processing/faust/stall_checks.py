"""Faust's stall checks, as they apply to a processor: warnings, not errors.

Faust's aiokafka driver checks every assigned partition every few seconds (its "livelock
detector"): has aiokafka fetched it, has the stream taken an event of it, has Faust committed
it lately. A Faust *stream* tells its monitor when it takes an event; a processor has no stream
(the engine takes the events, see :mod:`pipeline.processing.faust.binding`), so the binding
tells the monitor itself. Even so the checks misread a processor: a partition it paused while
the engine is full, or one just assigned during a rebalance, is "not fetched", and a handler
slower than Faust's commit timeout is "not committed". Faust logs those at ERROR with a
paragraph of Faust-specific advice; they reached Elasticsearch as errors of a healthy processor
(the "Errors by service" search).

:class:`StallCheckWarnings` makes each of them one WARNING line that says what it is: still
visible, no longer an error. The processor's own figures (``pipeline_consumer_lag``,
``pipeline_events_in_flight``, the summary line) say whether it is really stuck.
"""

from __future__ import annotations

import logging

__all__ = ["STALL_CHECK_LOGGER", "StallCheckWarnings", "install_stall_check_warnings"]

#: The logger of Faust's aiokafka driver, which logs the stall checks.
STALL_CHECK_LOGGER = "faust.transport.drivers.aiokafka"

#: The start of each stall check's message (faust.transport.drivers.aiokafka's
#: ``SLOW_PROCESSING_*`` texts, up to their first argument).
_STALL_CHECKS = (
    "Aiokafka has not sent fetch request for",
    "Aiokafka has not received fetch response for",
    "Aiokafka stopped fetching from",
    "Broker stopped responding to fetch requests for",
    "Highwater not yet available for",
    "Stream has not started processing",
    "Stream stopped processing, or is slow for",
    "Has not committed",
)

#: mode's ServiceThread check that the consumer thread's event loop still answers.
_KEEPALIVE = "Thread keepalive is not responding"


class StallCheckWarnings(logging.Filter):
    """Turns an ERROR of Faust's stall checks into one WARNING line; passes the rest as is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not isinstance(record.msg, str):
            return True
        if _KEEPALIVE in record.msg:
            # mode's check of Faust's consumer thread: its event loop did not answer for 3 s.
            record.msg = (
                "Faust's consumer thread did not answer for over 3 s: the process was paused, "
                "or an event loop blocked"
            )
            record.args = ()
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
            return True
        if not any(check in record.msg for check in _STALL_CHECKS):
            return True
        first_line = record.getMessage().strip().split("\n", 1)[0].strip()
        record.msg = f"Faust's stall check: {first_line}"
        record.args = ()
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
        return True


def install_stall_check_warnings() -> None:
    """Add :class:`StallCheckWarnings` to Faust's driver logger (once)."""
    driver = logging.getLogger(STALL_CHECK_LOGGER)
    if not any(isinstance(known, StallCheckWarnings) for known in driver.filters):
        driver.addFilter(StallCheckWarnings())
