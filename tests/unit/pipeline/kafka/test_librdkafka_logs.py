"""librdkafka's log lines go through logging, summarised, never straight to stderr."""

from __future__ import annotations

import logging
import random
import string
import time

from pipeline.kafka.clients import build_producer
from pipeline.kafka.librdkafka_logs import LOGGER_NAME, RepeatSummary
from pipeline.settings import KafkaSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord(LOGGER_NAME, logging.ERROR, __file__, 1, message, (), None)


def test_repeats_of_a_kind_are_held_back_then_counted():
    clock = FakeClock()
    summary = RepeatSummary(every_s=60, clock=clock)
    fail = "FAIL [rdkafka#producer-1] Connect to ipv4#127.0.0.1:9092 failed (after {}ms)"

    passed = [summary.filter(_record(fail.format(n))) for n in range(5)]
    other = summary.filter(_record("ERROR [rdkafka#producer-1] 1/1 brokers are down"))
    clock.now = 61
    later = _record(fail.format(99))
    later_passed = summary.filter(later)

    assert passed == [True, False, False, False, False]
    assert other is True
    assert later_passed is True
    assert later.getMessage() == fail.format(99) + " (4 more like it held back)"


def test_a_client_without_kafka_logs_through_logging_and_not_to_stderr(capfd):
    caught: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record)

    handler = Catch()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    # A client id of its own: lines of other clients, summarised already, cannot hide its own.
    client_id = "".join(random.choices(string.ascii_lowercase, k=16))
    producer = build_producer(KafkaSettings(bootstrap_servers="127.0.0.1:1", client_id=client_id))
    try:
        deadline = time.monotonic() + 30  # a bound for a broken librdkafka, not a timing check
        while not caught and time.monotonic() < deadline:
            producer.poll(0.2)
    finally:
        logger.removeHandler(handler)
        producer.flush(0)

    assert caught, "no librdkafka line reached logging"
    assert any("127.0.0.1:1" in record.getMessage() for record in caught)
    assert "|FAIL|" not in capfd.readouterr().err


GETPID = (
    "GETPID [pipeline#producer-2] [thrd:main]: Failed to acquire idempotence PID from broker "
    "sasl_ssl://127.0.0.1:19092/1: Broker: Coordinator load in progress: retrying"
)


def test_a_wait_librdkafka_ends_by_itself_is_info_not_a_warning(caplog):
    # Printed among `pipeline produce`'s output against a broker just started, it read as a
    # failure of a run in which every event was acknowledged. (Tagged: the logger's repeat
    # summary holds back a line of a kind it saw.)
    logger = logging.getLogger(LOGGER_NAME)
    tag = "".join(random.choices(string.ascii_letters, k=12))
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        logger.warning(GETPID.replace("pipeline#", f"{tag}#"))
        logger.warning(f"FAIL [{tag}#producer-1] Connect to ipv4#127.0.0.1:9092 failed")
    assert [r.getMessage()[:4] for r in caplog.records] == ["FAIL"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        logger.warning(GETPID.replace("pipeline#", f"{tag}x#"))
    assert [r.levelno for r in caplog.records] == [logging.INFO]
