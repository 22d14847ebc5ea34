"""The Kafka log handler with librdkafka's real producer: what librdkafka tells its error callback
when Kafka refuses the connection or nothing listens ends the wait at exit (it was the whole
5 s flush timeout, after the program had said why already), and a healthy Kafka still gets
every record."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.logs import KafkaLogHandler, configure_logging
from pipeline.ports import free_port
from pipeline.settings import PipelineSettings


@pytest.fixture
def logging_to(pipeline_settings: PipelineSettings) -> Iterator[Any]:
    """``logging_to(**kafka)``: configure_logging with a JSON console and these Kafka settings
    (on top of the stack's); returns its handler, a logger using only its handlers, the
    console."""
    root = logging.getLogger()
    before = list(root.handlers)
    loggers: list[logging.Logger] = []

    def configure(**kafka: Any) -> tuple[KafkaLogHandler, logging.Logger, io.StringIO]:
        settings = PipelineSettings(kafka={**pipeline_settings.kafka.model_dump(), **kafka})
        stream = io.StringIO()
        handler = configure_logging(settings, "svc", console="json", stream=stream)
        assert isinstance(handler, KafkaLogHandler)
        logger = logging.getLogger(f"test.refused.{len(loggers)}")
        logger.propagate = False
        logger.handlers = [h for h in root.handlers if h not in before]
        loggers.append(logger)
        return handler, logger, stream

    yield configure
    for logger in loggers:
        logger.handlers = []
    for extra in [h for h in root.handlers if h not in before]:
        root.removeHandler(extra)
        extra.close()


def _notes(stream: io.StringIO) -> list[str]:
    documents = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [d["message"] for d in documents if d["log"]["logger"] == "pipeline.logs.handler"]


def _exit(handler: KafkaLogHandler, logger: logging.Logger, said: str) -> float:
    logger.info("connecting to Kafka ...")
    time.sleep(0.5)  # the handler's producer connects meanwhile
    logger.error(said)  # the program's own one line
    started = time.monotonic()
    handler.close()
    return time.monotonic() - started


def test_sasl_at_a_listener_without_sasl_is_not_waited_for_at_exit(logging_to):
    handler, logger, stream = logging_to(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="someone",
        sasl_password="not-the-password",
    )

    took = _exit(handler, logger, "Kafka refused the connection (SASL PLAIN handshake failed)")

    assert handler.flush_timeout_s == 5.0
    assert took < 1.5, took
    assert _notes(stream) == [
        "kafka log handler: 2 records not delivered (Kafka refused the connection); they are "
        "only in this stream"
    ]
    assert "not-the-password" not in stream.getvalue()


def test_nothing_listening_is_not_waited_for_at_exit(logging_to):
    handler, logger, stream = logging_to(bootstrap_servers=f"127.0.0.1:{free_port()}")

    took = _exit(handler, logger, "Kafka does not answer")

    assert took < 1.5, took
    assert _notes(stream) == [
        "kafka log handler: 2 records not delivered (no Kafka broker could be reached); they "
        "are only in this stream"
    ]


def test_a_healthy_kafka_gets_the_records_said_at_exit(logging_to):
    handler, logger, stream = logging_to()
    for n in range(3):
        logger.info("said just before exiting %d", n)

    handler.close()

    assert handler.counters.delivered == 3 and handler.counters.failed == 0
    assert _notes(stream) == []
