"""A program that logs ECS JSON to stderr (``PIPELINE_LOGS__CONSOLE=json``) writes nothing else
there: its notes (``database: ...``, ``connecting to Kafka ...``) and the one-line error it
ends with are log records too, and the error reaches the logs topic. With a text console
(or before logging is set up) they are printed as they always were."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from pipeline.cli import main
from pipeline.cli.console import stderr_console
from pipeline.database import DatabaseError
from pipeline.errors import PipelineError
from pipeline.logs import configure_logging
from pipeline.logs import setup as logging_setup
from pipeline.settings import PipelineSettings

#: An error that quotes a password: redacted wherever it is written.
SECRET = "hunter2"
FAILED = (
    f"cannot use the database postgresql+psycopg://pipeline:{SECRET}@127.0.0.1:5432/rvobs: "
    'password authentication failed for user "pipeline"'
)


class Kafka:
    """A producer that acknowledges every record on the next poll, or, ``away``, none (and
    fails what is purged at exit); it keeps the timeouts it was flushed with."""

    def __init__(self, away: bool = False) -> None:
        self.away = away
        self.sent: list[bytes] = []
        self.pending: list[tuple[object, bytes]] = []
        self.flush_timeouts: list[float] = []
        self.lock = threading.Lock()

    def produce(self, topic, value=None, key=None, on_delivery=None):
        with self.lock:
            self.sent.append(value)
            self.pending.append((on_delivery, value))

    def poll(self, timeout=0):
        if self.away:
            return 0
        with self.lock:
            pending, self.pending = self.pending, []
        for callback, value in pending:
            callback(None, SimpleNamespace(value=lambda value=value: value))
        return len(pending)

    def flush(self, timeout=0):
        self.flush_timeouts.append(timeout)
        self.poll()
        return len(self.pending)

    def purge(self, in_queue=True, in_flight=True, blocking=True):
        with self.lock:
            purged, self.pending = self.pending, []
        for callback, value in purged:
            callback("Local: Purged in queue", SimpleNamespace(value=lambda value=value: value))

    def __len__(self):
        return len(self.pending)


@pytest.fixture
def logged(clean_pipeline_environment, monkeypatch, capsys) -> Iterator[SimpleNamespace]:
    """``configure(console, kafka)`` sets up a program's logging, its console on stderr (as a
    program's: ``stderr()`` reads what was written there); the handlers are removed after."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level

    def configure(console: str, kafka: Kafka | None = None, **logs: object) -> object:
        producer = Kafka() if kafka is None else kafka
        monkeypatch.setattr(
            logging_setup, "_kafka_producer_factory", lambda settings, on_error: producer
        )
        settings = PipelineSettings(logs={"console": console, **logs})
        return configure_logging(settings, "outbox-relay")

    yield SimpleNamespace(configure=configure, stderr=lambda: capsys.readouterr().err)
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def _run_failing(monkeypatch, error: Exception) -> int:
    """``pipeline``'s entry point, with a command that fails with ``error``: the exit code."""

    def command() -> None:
        raise error

    monkeypatch.setattr(main, "app", command)
    with pytest.raises(SystemExit) as exited:
        main.run()
    assert isinstance(exited.value.code, int)
    return exited.value.code


def test_the_error_a_json_logging_program_ends_with_is_an_ecs_line_sent_to_the_logs_topic(
    logged, monkeypatch
):
    # The review: "error: cannot use the database ..." in plain text amid the JSON lines, and
    # the logs topic did not get it.
    kafka = Kafka()
    handler = logged.configure("json", kafka)

    assert _run_failing(monkeypatch, DatabaseError(FAILED)) == 2
    handler.close()  # as at exit

    [line] = logged.stderr().splitlines()  # nothing but the log line
    document = json.loads(line)
    assert document["log"]["level"] == "error"
    assert document["message"] == FAILED.replace(SECRET, "[REDACTED]")
    assert document["error"] == {
        "type": "pipeline.database.DatabaseError",
        "message": FAILED.replace(SECRET, "[REDACTED]"),
    }
    assert document["labels"] == {"exit_code": "2"}
    [sent] = [json.loads(value) for value in kafka.sent]
    assert sent["event"]["id"] == document["event"]["id"]  # the same line, in the topic
    assert SECRET not in line


def test_with_kafka_away_the_error_waits_no_longer_than_the_flush_timeout_all_in_json(
    logged, monkeypatch
):
    # A program whose problem is Kafka itself: its error line is not waited for past the
    # handler's flush timeout, once, and the handler's own count at exit is JSON as well.
    kafka = Kafka(away=True)
    handler = logged.configure("json", kafka, flush_timeout_s=0.2)

    assert _run_failing(monkeypatch, PipelineError("Kafka at 10.0.0.1:9092 does not answer")) == 2
    handler.close()

    documents = [json.loads(line) for line in logged.stderr().splitlines()]
    assert [d["log"]["level"] for d in documents] == ["error", "warning"]
    assert documents[0]["message"] == "Kafka at 10.0.0.1:9092 does not answer"
    assert documents[1]["message"].startswith("kafka log handler: 1 record not delivered")
    assert sum(kafka.flush_timeouts) <= 0.2


def test_what_a_json_logging_program_says_on_stderr_is_logged(logged):
    logged.configure("json")
    console = stderr_console()

    console.print("database: postgresql+psycopg://pipeline@127.0.0.1:5432/rvobs", highlight=False)
    console.print(f"connecting to Kafka at 10.0.0.1:9092 (sasl.password={SECRET}) ...")
    console.print("[yellow]warning: the outbox lease is held by relay-2[/yellow]")
    console.print("2 gateway workers started (pids 10, 11)", highlight=False)

    documents = [json.loads(line) for line in logged.stderr().splitlines()]
    assert [(d["log"]["level"], d["log"]["logger"]) for d in documents] == [
        ("info", "pipeline.cli"),
        ("info", "pipeline.cli"),
        ("warning", "pipeline.cli"),
        ("info", "pipeline.cli"),
    ]
    assert [d["message"] for d in documents] == [
        "database: postgresql+psycopg://pipeline@127.0.0.1:5432/rvobs",
        "connecting to Kafka at 10.0.0.1:9092 (sasl.password=[REDACTED]) ...",
        "the outbox lease is held by relay-2",
        "2 gateway workers started (pids 10, 11)",
    ]


def test_with_a_text_console_the_lines_are_printed_as_they_always_were(logged, monkeypatch):
    logged.configure("text")
    stderr_console().print("database: sqlite:///pipeline.db", highlight=False)

    assert _run_failing(monkeypatch, DatabaseError(FAILED)) == 2

    assert logged.stderr().splitlines() == [
        "database: sqlite:///pipeline.db",
        f"error: {FAILED.replace(SECRET, '[REDACTED]')}",
    ]


def test_a_json_console_on_another_stream_leaves_stderr_as_it_is(logged, monkeypatch):
    # configure_logging(stream=...) elsewhere (a test's, a file): stderr is not its to keep.
    settings = PipelineSettings(logs={"console": "json"})
    configure_logging(settings, "svc", to_kafka=False, stream=io.StringIO())

    assert _run_failing(monkeypatch, PipelineError("nothing to do")) == 2

    assert logged.stderr() == "error: nothing to do\n"


def test_before_logging_is_set_up_an_error_is_one_plain_line(monkeypatch, capsys):
    assert _run_failing(monkeypatch, PipelineError("nothing to do")) == 2

    assert capsys.readouterr().err == "error: nothing to do\n"
