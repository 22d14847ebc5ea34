"""Faust's stall checks are one WARNING line each for a processor, not ERROR paragraphs."""

from __future__ import annotations

import logging

import pytest
from faust.transport.drivers import aiokafka as driver

from pipeline.processing.faust.stall_checks import (
    STALL_CHECK_LOGGER,
    StallCheckWarnings,
    install_stall_check_warnings,
)


def _logged(
    caplog: pytest.LogCaptureFixture, level: int, msg: str, *args: object
) -> logging.LogRecord:
    logger = logging.getLogger(STALL_CHECK_LOGGER)
    with caplog.at_level(logging.DEBUG, logger=STALL_CHECK_LOGGER):
        logger.log(level, msg, *args)
    [record] = [r for r in caplog.records if r.name == STALL_CHECK_LOGGER]
    caplog.clear()
    return record


@pytest.fixture(autouse=True)
def _filter_installed() -> None:
    install_stall_check_warnings()
    install_stall_check_warnings()  # once only
    filters = logging.getLogger(STALL_CHECK_LOGGER).filters
    assert sum(isinstance(f, StallCheckWarnings) for f in filters) == 1


@pytest.mark.parametrize(
    "template",
    [
        driver.SLOW_PROCESSING_STREAM_IDLE_SINCE_START,
        driver.SLOW_PROCESSING_NO_FETCH_SINCE_START,
        driver.SLOW_PROCESSING_NO_RECENT_COMMIT,
        driver.SLOW_PROCESSING_STREAM_IDLE,
    ],
)
def test_each_stall_check_of_faust_is_one_warning_line(
    caplog: pytest.LogCaptureFixture, template: str
) -> None:
    # As Faust logs them: mode's prefix, the template, its paragraph of advice.
    advice = driver.SLOW_PROCESSING_EXPLAINED % {"setting": "s", "current_value": 300.0}
    message = f"[^--AIOKafkaConsumerThread]: {template} {advice}"
    record = _logged(caplog, logging.ERROR, message, "TP(topic='t', partition=2)", "14 minutes ago")

    assert record.levelno == logging.WARNING and record.levelname == "WARNING"
    text = record.getMessage()
    assert text.startswith("Faust's stall check: [^--AIOKafkaConsumerThread]: ")
    assert "TP(topic='t', partition=2)" in text
    assert "\n" not in text and "multiple possible explanations" not in text


def test_other_errors_of_the_driver_stay_errors(caplog: pytest.LogCaptureFixture) -> None:
    record = _logged(caplog, logging.ERROR, "Got exception: %r", ValueError("x"))
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "Got exception: ValueError('x')"


def test_the_consumer_threads_keepalive_is_a_warning_that_says_what_it_means(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # mode's ServiceThread, as Faust's consumer thread logs it after a pause (SIGSTOP, say).
    record = _logged(
        caplog, logging.ERROR, "[^---AIOKafkaConsumerThread]: Thread keepalive is not responding..."
    )

    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("Faust's consumer thread did not answer for over 3 s")
