"""An instance put out of its group for silence is one WARNING line each in the processor's own
words, not aiokafka's ERRORs that read like a failing broker."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from aiokafka.errors import UnknownMemberIdError

from pipeline.processing.faust.session_expiry import (
    GROUP_COORDINATOR_LOGGER,
    SessionExpiryWarnings,
    install_session_expiry_warnings,
)


@pytest.fixture(autouse=True)
def _filter_installed() -> Iterator[None]:
    coordinator = logging.getLogger(GROUP_COORDINATOR_LOGGER)
    # Only ours: configure_logging (another test's) adds RepeatSummary, which holds back a
    # line this process logged a moment ago.
    others = [f for f in coordinator.filters if not isinstance(f, SessionExpiryWarnings)]
    for known in others:
        coordinator.removeFilter(known)
    install_session_expiry_warnings(25.0)
    install_session_expiry_warnings(12.0)  # once only, naming the timeout of the last call
    [installed] = [f for f in coordinator.filters if isinstance(f, SessionExpiryWarnings)]
    assert installed.session_timeout_s == 12.0
    yield
    for known in others:
        coordinator.addFilter(known)


def _logged(
    caplog: pytest.LogCaptureFixture, level: int, msg: str, *args: object
) -> logging.LogRecord:
    logger = logging.getLogger(GROUP_COORDINATOR_LOGGER)
    with caplog.at_level(logging.DEBUG, logger=GROUP_COORDINATOR_LOGGER):
        logger.log(level, msg, *args)
    [record] = [r for r in caplog.records if r.name == GROUP_COORDINATOR_LOGGER]
    caplog.clear()
    return record


def test_an_expired_session_says_the_partitions_went_to_others_and_nothing_is_lost(caplog):
    # aiokafka's own words (group_coordinator.py).
    record = _logged(caplog, logging.ERROR, "Heartbeat session expired - marking coordinator dead")

    assert record.levelno == logging.WARNING and record.levelname == "WARNING"
    text = record.getMessage()
    assert text.startswith("no heartbeat reached the consumer group for over 12 s "), text
    assert "PIPELINE_PROCESSING__SESSION_TIMEOUT_S" in text
    assert "next owners handle it" in text and "coordinator dead" not in text


def test_a_commit_refused_after_the_group_went_on_is_a_warning_naming_the_error(caplog):
    record = _logged(
        caplog,
        logging.ERROR,
        "OffsetCommit failed for group %s due to group error (%s), will rejoin",
        "orders",
        UnknownMemberIdError("orders"),
    )

    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert text.startswith("a commit was refused because the group went on without this instance")
    assert "OffsetCommit failed for group orders" in text and "UnknownMemberIdError" in text


def test_other_errors_and_lower_levels_are_left_as_they_are(caplog):
    other = _logged(caplog, logging.ERROR, "OffsetCommit failed for group %s - %s", "g", "x")
    info = _logged(caplog, logging.INFO, "Heartbeat session expired - marking coordinator dead")

    assert (
        other.levelno == logging.ERROR
        and other.getMessage() == "OffsetCommit failed for group g - x"
    )
    assert info.levelno == logging.INFO


def test_a_static_member_put_out_by_another_under_its_id_is_an_error_naming_the_id(caplog):
    # Two instances given one group_instance_id took the partitions from each other in turn,
    # with only this warning of aiokafka's to say so.
    install_session_expiry_warnings(12.0, "orders-2")
    words = "Heartbeat failed: local member_id was not recognized; resetting and re-joining group"

    record = _logged(caplog, logging.WARNING, words)

    assert record.levelno == logging.ERROR
    text = record.getMessage()
    assert "under the same group_instance_id 'orders-2'" in text
    assert "PIPELINE_PROCESSING__GROUP_INSTANCE_ID" in text


def test_without_an_instance_id_the_member_not_recognized_warning_is_left_alone(caplog):
    words = "Heartbeat failed: local member_id was not recognized; resetting and re-joining group"

    record = _logged(caplog, logging.WARNING, words)

    assert (record.levelno, record.getMessage()) == (logging.WARNING, words)
