"""A Kafka that refused the connection (login, TLS) or that no broker of could be reached, as
the producer's error callback said: the handler's close at exit does not wait its flush timeout
for it, and its one line says why the records are only on stderr. A healthy Kafka still gets
the whole timeout."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError

from pipeline.errors import PipelineError
from pipeline.logs import KafkaLogHandler, configure_logging
from pipeline.logs import setup as logging_setup
from pipeline.logs.handler import (
    KAFKA_REFUSED,
    KAFKA_UNREACHABLE,
    kafka_unusable,
)
from pipeline.settings import PipelineSettings

AUTHENTICATION = KafkaError(
    KafkaError._AUTHENTICATION,
    "sasl_plaintext://127.0.0.1:9092/bootstrap: SASL authentication error: Authentication "
    "failed during authentication due to invalid credentials with SASL mechanism PLAIN",
)
ALL_DOWN = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
ONE_BROKER_GONE = KafkaError(
    KafkaError._TRANSPORT, "127.0.0.1:9093/2: Connect to ipv4#127.0.0.1:9093 failed"
)


class _Message:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


class Kafka:
    """librdkafka as the handler sees it: ``errors`` go to the ``error_cb`` at the first poll
    or flush (as librdkafka serves them); records are acknowledged ``ack_after_s`` after they
    were produced (``None``: never), and a flush waits its timeout for them, as librdkafka's."""

    def __init__(
        self,
        error_cb: Callable[[Any], None] | None,
        errors: tuple[KafkaError, ...] = (),
        ack_after_s: float | None = None,
    ) -> None:
        self.error_cb = error_cb
        self.errors = list(errors)
        self.ack_after_s = ack_after_s
        self.queued: list[tuple[float, Any, bytes]] = []
        self.purged: list[tuple[Any, bytes]] = []
        self.lock = threading.Lock()

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        with self.lock:
            self.queued.append((time.monotonic(), on_delivery, value))

    def _serve(self) -> None:
        with self.lock:
            errors, self.errors = self.errors, []
            purged, self.purged = self.purged, []
            now = time.monotonic()
            ready = [
                item
                for item in self.queued
                if self.ack_after_s is not None and now - item[0] >= self.ack_after_s
            ]
            self.queued = [item for item in self.queued if item not in ready]
        for error in errors:
            if self.error_cb is not None:
                self.error_cb(error)
        for _, on_delivery, value in ready:
            on_delivery(None, _Message(value))
        for on_delivery, value in purged:
            on_delivery(KafkaError(KafkaError._PURGE_QUEUE), _Message(value))

    def poll(self, timeout: float = 0) -> int:
        self._serve()
        return 0

    def flush(self, timeout: float = 0) -> int:
        end = time.monotonic() + timeout
        while True:
            self._serve()
            if not self.queued or time.monotonic() >= end:
                return len(self.queued)
            time.sleep(0.002)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        with self.lock:
            self.purged = [(on_delivery, value) for _, on_delivery, value in self.queued]
            self.queued = []

    def __len__(self) -> int:
        return len(self.queued)


@pytest.fixture
def program(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``program(**kafka)``: a program's logging with a JSON console (configure_logging), its
    Kafka a :class:`Kafka` made with the ``error_cb`` configure_logging gives the producer
    (``.made``, once the first record came)."""
    root = logging.getLogger()
    before = list(root.handlers)
    made: list[Any] = []

    def start(**kafka: Any) -> Any:
        def build_producer(settings: Any, **config: Any) -> Kafka:
            made.append(Kafka(config.get("error_cb"), **kafka))
            return made[-1]

        monkeypatch.setattr(logging_setup, "build_producer", build_producer)
        stream = io.StringIO()
        handler = configure_logging(PipelineSettings(), "svc", console="json", stream=stream)
        assert isinstance(handler, KafkaLogHandler)
        logger = logging.getLogger("svc.refused")
        logger.propagate = False  # its handlers alone (pytest's capture stays out of it)
        logger.handlers = [h for h in root.handlers if h not in before]
        return SimpleNamespace(handler=handler, logger=logger, stream=stream, made=made)

    yield start
    logging.getLogger("svc.refused").handlers = []
    for extra in [h for h in root.handlers if h not in before]:
        root.removeHandler(extra)
        extra.close()


def _their_lines(stream: io.StringIO) -> list[str]:
    """The handler's own lines (the records themselves are the console's)."""
    documents = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [d["message"] for d in documents if d["log"]["logger"] == "pipeline.logs.handler"]


def test_at_exit_a_kafka_that_refused_the_login_is_not_waited_for(program):
    # The program said it (its error line) and exited; the handler's close waited the whole
    # 5 s flush timeout for a Kafka that had refused the login, then said "not acknowledged
    # within the 5 s flush timeout". librdkafka says "all brokers down" after the refusal.
    run = program(errors=(AUTHENTICATION, ALL_DOWN))
    handler, logger, stream = run.handler, run.logger, run.stream
    logger.info("connecting to Kafka at 127.0.0.1:9092 ...")
    time.sleep(0.3)  # the producer connects meanwhile, and is refused
    logger.error("Kafka at 127.0.0.1:9092 refused the connection (SASL authentication error)")

    started = time.monotonic()
    handler.close()
    took = time.monotonic() - started

    assert handler.flush_timeout_s == 5.0
    assert took < 1.0, f"close() waited {took:.1f} s for a Kafka that refused the login"
    assert _their_lines(stream) == [
        "kafka log handler: 2 records not delivered (Kafka refused the connection); they are "
        "only in this stream"
    ]
    assert handler.counters.failed == 2 and handler.counters.delivered == 0


def test_a_refusal_reported_while_the_exit_waits_ends_the_wait(program):
    # The first record at exit: the producer is made then, and learns of the refusal while
    # close() already waits (pipeline gateway's one error line).
    run = program(errors=(AUTHENTICATION,))
    handler, logger, stream = run.handler, run.logger, run.stream
    logger.error("Kafka at 127.0.0.1:9092 refused the connection")

    started = time.monotonic()
    handler.close()

    assert time.monotonic() - started < 1.0
    assert _their_lines(stream) == [
        "kafka log handler: 1 record not delivered (Kafka refused the connection); they are "
        "only in this stream"
    ]


def test_at_exit_a_kafka_no_broker_of_could_be_reached_is_not_waited_for(program):
    run = program(errors=(ALL_DOWN,))
    handler, logger, stream = run.handler, run.logger, run.stream
    logger.info("connecting to Kafka at 127.0.0.1:9199 ...")
    time.sleep(0.3)
    logger.error("Kafka at 127.0.0.1:9199 does not answer")

    started = time.monotonic()
    handler.close()

    assert time.monotonic() - started < 1.0
    assert _their_lines(stream) == [
        "kafka log handler: 2 records not delivered (no Kafka broker could be reached); they "
        "are only in this stream"
    ]


def test_one_broker_gone_is_still_waited_for_the_whole_timeout(program):
    # Another broker may take the records: a transport error alone decides nothing.
    run = program(errors=(ONE_BROKER_GONE,))
    handler, logger, stream = run.handler, run.logger, run.stream
    handler.flush_timeout_s = 0.6
    logger.error("said while a broker restarts")
    time.sleep(0.2)

    started = time.monotonic()
    handler.close()

    assert time.monotonic() - started >= 0.55
    assert _their_lines(stream) == [
        "kafka log handler: 1 record not delivered (Kafka did not acknowledge them within the "
        "0.6 s flush timeout at exit); they are only in this stream"
    ]


def test_a_healthy_kafka_still_gets_the_whole_flush_timeout(program):
    # Slow to acknowledge (1.5 s), but there: everything reaches it, as before.
    run = program(ack_after_s=1.5)
    handler, logger, stream = run.handler, run.logger, run.stream
    for n in range(3):
        logger.info("line %d", n)

    handler.close()

    assert handler.counters.delivered == 3 and handler.counters.failed == 0
    assert _their_lines(stream) == []


def test_once_kafka_takes_records_again_its_past_refusal_is_forgotten(program):
    # All brokers were down a while (a restart), then Kafka took a record: at exit the records
    # still unacknowledged get the whole timeout, not the refusal's fraction of a second.
    run = program(errors=(ALL_DOWN,), ack_after_s=0.0)
    handler, logger, stream = run.handler, run.logger, run.stream
    logger.info("during the restart")
    time.sleep(0.3)
    assert handler.counters.delivered == 1
    run.made[-1].ack_after_s = 1.0  # slow now
    logger.info("at exit")

    handler.close()

    assert handler.counters.delivered == 2 and handler.counters.failed == 0
    assert _their_lines(stream) == []


def test_kafka_settings_no_client_can_be_made_with_are_the_programs_one_line(
    tmp_path: Path,
) -> None:
    # pipeline process, gateway and outbox relay said a missing CA three times: the handler's
    # "no producer (...)", their own error, and "2 records not delivered (no producer: ...)".
    missing = tmp_path / "ca.crt"
    settings = PipelineSettings(kafka={"security_protocol": "SSL", "ssl_ca_location": missing})
    root = logging.getLogger()
    before = list(root.handlers)
    stream = io.StringIO()
    try:
        with pytest.raises(PipelineError) as refused:
            configure_logging(settings, "svc", console="json", stream=stream)
        installed = [h for h in root.handlers if h not in before]
        # The program's error, as its entry point logs it with a JSON console (then it exits).
        logging.getLogger("pipeline.cli").error(str(refused.value))
    finally:
        for extra in [h for h in root.handlers if h not in before]:
            root.removeHandler(extra)
            extra.close()

    said = f"cannot set up a Kafka client: no file at {missing} (PIPELINE_KAFKA__SSL_CA_LOCATION)"
    assert str(refused.value) == said
    assert not any(isinstance(handler, KafkaLogHandler) for handler in installed)
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [said]


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (AUTHENTICATION, KAFKA_REFUSED),
        (KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED), KAFKA_REFUSED),
        (
            KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed"),
            KAFKA_REFUSED,
        ),
        (
            KafkaError(
                KafkaError._TRANSPORT,
                "ssl://127.0.0.1:9092/bootstrap: SSL handshake failed: Disconnected: SSL "
                "connection closed by peer: connecting to a PLAINTEXT broker listener?",
            ),
            KAFKA_REFUSED,
        ),
        (ALL_DOWN, KAFKA_UNREACHABLE),
        (ONE_BROKER_GONE, None),
        (KafkaError(KafkaError._RESOLVE, "Failed to resolve 'kafka-2:9092'"), None),
        (KafkaError(KafkaError._MSG_TIMED_OUT), None),
    ],
)
def test_which_errors_say_kafka_cannot_be_used(error, said):
    assert kafka_unusable(error) == said
