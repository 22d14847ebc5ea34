"""KafkaLogHandler against stand-in producers: it never blocks, counts drops, never loops."""

import io
import json
import logging
import os
import threading

import pytest

from pipeline.logs import KafkaLogHandler, configure_logging, log_context
from pipeline.logs import setup as logging_setup
from pipeline.settings import PipelineSettings


class FakeMessage:
    def __init__(self, value):
        self._value = value

    def value(self):
        return self._value


class FakeProducer:
    """Acknowledges (or fails) each record on the next poll; can be held to act as a dead Kafka."""

    def __init__(self, fail=False):
        self.sent = []
        self.pending = []
        self.fail = fail
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()

    def produce(self, topic, value=None, key=None, on_delivery=None):
        self.release.wait()
        with self.lock:
            self.sent.append((topic, key, value))
            self.pending.append((on_delivery, value))

    def poll(self, timeout=0):
        with self.lock:
            pending, self.pending = self.pending, []
        for callback, value in pending:
            callback("broker down" if self.fail else None, FakeMessage(value))
        return len(pending)

    def flush(self, timeout=0):
        self.poll()
        return 0

    def purge(self, in_queue=True, in_flight=True, blocking=True):
        pass  # acknowledges everything on the next poll: nothing left to take back

    def __len__(self):
        return len(self.pending)


class UnreachableKafka:
    """librdkafka with no broker: takes records until its queue of ``room`` is full (then
    BufferError), acknowledges none, and fails what is purged on the next poll or flush."""

    def __init__(self, room):
        self.room = room
        self.queued = []
        self.purged = []
        self.flush_timeouts = []

    def produce(self, topic, value=None, key=None, on_delivery=None):
        if len(self.queued) >= self.room:
            raise BufferError("Local: Queue full")
        self.queued.append((on_delivery, value))

    def poll(self, timeout=0):
        threading.Event().wait(min(timeout, 0.01))
        purged, self.purged = self.purged, []
        for callback, value in purged:
            callback("Local: Purged in queue", FakeMessage(value))
        return len(purged)

    def flush(self, timeout=0):
        self.flush_timeouts.append(timeout)
        self.poll()
        return len(self.queued)

    def purge(self, in_queue=True, in_flight=True, blocking=True):
        self.purged, self.queued = self.queued, []

    def __len__(self):
        return len(self.queued)


def _logger(handler, name="app"):
    logger = logging.getLogger(f"test.{name}.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


def test_records_go_to_the_topic_keyed_by_service_with_the_callers_context():
    producer = FakeProducer()
    handler = KafkaLogHandler(lambda: producer, service="orders", topic="logs", hostname="h")
    logger = _logger(handler)
    with log_context(correlation_id="req-9"):
        logger.info("placed %s", "o-1")
    handler.close()
    assert len(producer.sent) == 1
    topic, key, value = producer.sent[0]
    assert (topic, key) == ("logs", b"orders")
    document = json.loads(value)
    assert document["message"] == "placed o-1"
    assert document["pipeline"] == {"correlation_id": "req-9"}
    assert document["service"] == {"name": "orders"}
    assert handler.counters.delivered == 1 and handler.counters.dropped == 0


def test_emit_never_waits_for_a_stuck_kafka_and_counts_what_it_drops():
    producer = FakeProducer()
    producer.release.clear()  # produce() hangs, like a client that cannot reach Kafka
    fallback = io.StringIO()
    handler = KafkaLogHandler(
        lambda: producer, service="s", buffer_size=3, fallback=fallback, flush_timeout_s=0
    )
    logger = _logger(handler)
    for n in range(50):
        logger.warning("line %d", n)  # would hang here if emit waited for the sender
    counters = handler.counters
    assert counters.emitted == 50
    # the sender holds at most one record, the buffer three: the rest were dropped to stderr
    assert 46 <= counters.dropped <= 47
    dropped_lines = fallback.getvalue().splitlines()
    assert len(dropped_lines) == counters.dropped
    assert json.loads(dropped_lines[-1])["message"] == "line 49"
    producer.release.set()
    handler.flush_timeout_s = 5.0  # time to send what is buffered, now that Kafka is back
    handler.close()
    # At exit, one line says how many never reached Kafka, where they are.
    assert fallback.getvalue().splitlines()[-1] == (
        f"kafka log handler: {counters.dropped} records dropped (the buffer of 3 was full: "
        "Kafka was away or slow, or records came faster than they could be sent); they are only "
        "in this stream"
    )


def test_records_kafka_did_not_take_are_counted_and_written_to_the_fallback():
    producer = FakeProducer(fail=True)
    fallback = io.StringIO()
    handler = KafkaLogHandler(lambda: producer, service="s", fallback=fallback)
    _logger(handler).error("lost?")
    handler.close()
    assert handler.counters.failed == 1
    lines = fallback.getvalue().splitlines()
    assert json.loads(lines[0])["message"] == "lost?"
    assert lines[-1] == (
        "kafka log handler: 1 record not delivered (broker down); they are only in this stream"
    )


def test_at_exit_with_kafka_unreachable_one_line_counts_every_record_with_its_reason():
    # 12,000 records with Kafka away were reported as "10,000 not acknowledged" and "1,999 not
    # delivered", with no reason: two lines, one record short (the one the sender held), and
    # the 10,000 were not on the fallback stream at all. Exit also waited twice for Kafka.
    producer = UnreachableKafka(room=10)
    fallback = io.StringIO()
    handler = KafkaLogHandler(
        lambda: producer, service="s", buffer_size=100, fallback=fallback, flush_timeout_s=0.3
    )
    logger = _logger(handler)
    for n in range(30):
        logger.info("line %d", n)
    handler.close()
    handler.flush()  # logging.shutdown flushes every handler after the atexit close

    lines = fallback.getvalue().splitlines()
    assert lines[-1] == (
        "kafka log handler: 20 records not delivered (never sent: the producer's queue stayed "
        "full, Kafka was not taking records); 10 records not delivered (Kafka did not "
        "acknowledge them within the 0.3 s flush timeout at exit); they are only in this stream"
    )
    written = sorted(json.loads(line)["message"] for line in lines[:-1])
    assert written == sorted(f"line {n}" for n in range(30))  # each once, none missing
    assert handler.counters.failed == 30 and handler.counters.delivered == 0
    assert sum(producer.flush_timeouts) <= 0.3  # the flush timeout bounds the waiting, once


@pytest.mark.parametrize(
    "interruption",
    [KeyboardInterrupt, SystemError],  # confluent-kafka's flush raises SystemError on a signal
)
def test_a_ctrl_c_during_the_flush_at_exit_ends_the_wait_without_a_traceback(
    monkeypatch, interruption
):
    producer = FakeProducer()
    fallback = io.StringIO()
    handler = KafkaLogHandler(lambda: producer, service="s", fallback=fallback)
    _logger(handler).error("said just before exiting")

    def interrupted(timeout_s=None):
        raise interruption  # the second Ctrl-C, while close() waits for Kafka

    monkeypatch.setattr(handler, "flush", interrupted)
    handler.close()  # returns: no KeyboardInterrupt out of an atexit callback

    assert handler._closed


def test_a_failing_producer_factory_sends_everything_to_the_fallback():
    def no_producer():
        raise RuntimeError("no brokers configured")

    fallback = io.StringIO()
    handler = KafkaLogHandler(no_producer, service="s", fallback=fallback)
    _logger(handler).info("still here")
    handler.close()
    lines = fallback.getvalue().splitlines()
    assert any("no producer (no brokers configured)" in line for line in lines)
    assert any('"message":"still here"' in line for line in lines)
    assert handler.counters.failed == 1


def test_its_own_and_librdkafkas_records_are_not_sent():
    producer = FakeProducer()
    handler = KafkaLogHandler(lambda: producer, service="s")
    for name in ("pipeline.logs.handler", "pipeline.kafka.logs"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        try:
            logger.warning("about myself")
        finally:
            logger.removeHandler(handler)
    handler.close()
    assert producer.sent == []
    assert handler.counters.skipped == 2


def test_a_record_made_inside_the_sender_thread_does_not_loop_back():
    handler = KafkaLogHandler(lambda: producer, service="s")
    logger = _logger(handler)

    class LoggingProducer(FakeProducer):
        def produce(self, topic, value=None, key=None, on_delivery=None):
            logger.warning("the producer logs while sending")  # from the sender thread
            super().produce(topic, value=value, key=key, on_delivery=on_delivery)

    producer = LoggingProducer()
    logger.info("one")
    handler.close()
    assert len(producer.sent) == 1
    assert handler.counters.skipped == 1


def test_configure_logging_is_idempotent_and_writes_ecs_json(monkeypatch):
    producer = FakeProducer()
    monkeypatch.setattr(
        logging_setup, "_kafka_producer_factory", lambda settings, on_error: producer
    )
    root = logging.getLogger()
    before = list(root.handlers)
    stream = io.StringIO()
    try:
        settings = PipelineSettings()
        configure_logging(settings, "svc", console="json", stream=stream)
        handler = configure_logging(settings, "svc", console="json", stream=stream)
        assert isinstance(handler, KafkaLogHandler)
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 2
        with log_context(event_id="ev-1"):
            logging.getLogger("svc.work").warning("hello")
        handler.flush()
        line = json.loads(stream.getvalue().splitlines()[-1])
        sent = json.loads(producer.sent[-1][2])
        assert line["message"] == "hello" and line["pipeline"] == {"event_id": "ev-1"}
        assert sent["event"]["id"] == line["event"]["id"]  # one document, two destinations
        assert configure_logging(settings, "svc", to_kafka=False, stream=stream) is None
        assert len([h for h in root.handlers if h not in before]) == 1
    finally:
        for extra in [h for h in root.handlers if h not in before]:
            root.removeHandler(extra)
            extra.close()


def test_configure_logging_prints_a_record_kafka_does_not_get_once(monkeypatch):
    # The console handler printed every record, and the Kafka handler printed the ones it
    # could not send (here one that cannot be formatted) a second time on the same stream.
    producer = FakeProducer(fail=True)
    monkeypatch.setattr(
        logging_setup, "_kafka_producer_factory", lambda settings, on_error: producer
    )
    root = logging.getLogger()
    before = list(root.handlers)
    stream = io.StringIO()
    try:
        handler = configure_logging(PipelineSettings(), "svc", console="json", stream=stream)
        assert handler is not None
        # Its handlers alone (pytest's own capture at the root cannot format the first line).
        logger = logging.getLogger("svc.work.once")
        logger.propagate = False
        for added in [h for h in root.handlers if h not in before]:
            logger.addHandler(added)
        logger.warning("a %s %d", "x")  # one argument short
        logger.warning("not acknowledged")  # Kafka fails it
        handler.close()
        logger.handlers.clear()
    finally:
        for extra in [h for h in root.handlers if h not in before]:
            root.removeHandler(extra)
            extra.close()
    lines = stream.getvalue().splitlines()

    assert sum("'a %s %d' % ('x',)" in line for line in lines) == 1, lines
    assert sum('"message":"not acknowledged"' in line for line in lines) == 1, lines
    assert "they are only in this stream" in lines[-1]


def test_configure_logging_refuses_a_missing_service_name():
    with pytest.raises(TypeError, match="service"):
        configure_logging(PipelineSettings(), "")


def test_a_line_with_a_lone_surrogate_reaches_kafka(capsys):
    producer = FakeProducer()
    handler = KafkaLogHandler(lambda: producer, service="s", fallback=io.StringIO())
    # An undecodable byte of a file name: UnicodeEncodeError once lost the line.
    _logger(handler).warning("cannot open %s", os.fsdecode(b"report-\xff.csv"))
    handler.close()

    assert "Logging error" not in capsys.readouterr().err
    assert len(producer.sent) == 1
    assert json.loads(producer.sent[0][2])["message"] == "cannot open report-\\xff.csv"
    assert handler.counters.delivered == 1


class Unprintable:
    def __str__(self):
        raise RuntimeError("no str for you")


def test_a_record_that_cannot_be_encoded_is_counted_and_written_to_the_fallback(capsys):
    producer = FakeProducer()
    fallback = io.StringIO()
    handler = KafkaLogHandler(lambda: producer, service="s", fallback=fallback)
    logger = _logger(handler)
    logger.warning("order %d placed", "o-1")  # its arguments do not fit its format
    logger.warning("customer", extra={"customer": Unprintable()})  # an extra without str()
    logger.info("fine")
    handler.close()

    assert "Logging error" not in capsys.readouterr().err  # not logging's traceback alone
    assert [json.loads(value)["message"] for _, _, value in producer.sent] == ["fine"]
    assert handler.counters.unencodable == 2 and handler.counters.delivered == 1
    lines = fallback.getvalue().splitlines()
    first, second = json.loads(lines[0]), json.loads(lines[1])
    assert first["message"] == "'order %d placed' % ('o-1',)"
    assert first["labels"]["encoding_error"] == (
        "TypeError: %d format: a real number is required, not str"
    )
    assert second["message"] == "customer"
    assert second["labels"]["encoding_error"] == "RuntimeError: no str for you"
    # Each cause with its count: the line named only the last one.
    assert lines[-1] == (
        "kafka log handler: 1 record dropped (could not be encoded: TypeError: %d format: a "
        "real number is required, not str); 1 record dropped (could not be encoded: "
        "RuntimeError: no str for you); they are only in this stream"
    )


def test_the_console_shows_a_record_that_cannot_be_encoded_without_a_traceback(capsys):
    stream = io.StringIO()
    for formatter in (logging_setup.EcsJsonFormatter("svc"), logging_setup.TextFormatter("svc")):
        console = logging.StreamHandler(stream)
        console.setFormatter(formatter)
        _logger(console, name="console").warning("order %d placed", "o-1")

    assert "Logging error" not in capsys.readouterr().err
    json_line, text_line = stream.getvalue().splitlines()
    assert json.loads(json_line)["message"] == "'order %d placed' % ('o-1',)"
    assert text_line.endswith(": 'order %d placed' % ('o-1',)")


def test_an_exception_whose_str_raises_reaches_kafka_with_its_traceback():
    class WeirdErr(Exception):
        def __str__(self):
            raise RuntimeError("str broken")

    producer = FakeProducer()
    handler = KafkaLogHandler(lambda: producer, service="s", fallback=io.StringIO())
    try:
        raise WeirdErr()
    except WeirdErr:
        _logger(handler).exception("weird exc str")
    handler.close()

    assert handler.counters.unencodable == 0 and handler.counters.delivered == 1
    document = json.loads(producer.sent[0][2])
    assert document["message"] == "weird exc str"
    assert document["error"]["type"].endswith("WeirdErr")
    assert document["error"]["message"] == "<exception str() failed>"
    assert document["error"]["stack_trace"].endswith("WeirdErr: <exception str() failed>")


def test_a_fatal_producer_error_at_the_exit_flush_is_counted_not_a_traceback():
    # A mistyped port that is the KRaft controller's: the idempotent producer is fatal, and its
    # flush at exit raised KafkaException out of the atexit callback (a traceback after the
    # program's own error record).
    from confluent_kafka import KafkaError, KafkaException

    fatal = KafkaError(
        KafkaError._UNSUPPORTED_FEATURE, "Idempotent producer not supported", fatal=True
    )

    class FatalProducer(FakeProducer):
        def poll(self, timeout=0):
            return 0  # nothing acknowledged

        def flush(self, timeout=0):
            raise KafkaException(fatal)

        def __len__(self):
            return 1

    fallback = io.StringIO()
    producer = FatalProducer()
    handler = KafkaLogHandler(lambda: producer, service="s", fallback=fallback)
    _logger(handler).error("cannot list the topics of Kafka")

    handler.close()  # no KafkaException

    assert handler._closed
    assert "Kafka refused the connection" in fallback.getvalue()


def test_records_another_thread_logs_while_the_handler_closes_are_counted_in_the_exit_line():
    # A SIGTERM's flush closes the handler while the program's other threads go on logging:
    # those records reach stderr only, and the exit line counts them (a re-check found
    # hundreds neither on the topic nor counted).
    fallback = io.StringIO()
    handler = KafkaLogHandler(lambda: producer, service="s", fallback=fallback)
    logger = _logger(handler)

    class LoggedDuringClose(FakeProducer):
        def purge(self, in_queue=True, in_flight=True, blocking=True):  # after _closed is set
            other = threading.Thread(target=lambda: logger.warning("from another thread"))
            other.start()
            other.join()

    producer = LoggedDuringClose()
    logger.info("one")
    handler.close()

    assert handler.counters.after_close == 1
    assert "1 record not sent (logged by another thread while the handler closed)" in (
        fallback.getvalue()
    )
