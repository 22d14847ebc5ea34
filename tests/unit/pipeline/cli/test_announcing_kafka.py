"""A command says where it connects to Kafka when Kafka is slow to answer, and only then."""

from __future__ import annotations

import threading

import pytest

from pipeline.cli import console


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.printed = threading.Event()

    def print(self, text: str) -> None:
        self.lines.append(text)
        self.printed.set()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    made = Recorder()
    monkeypatch.setattr(console, "stderr_console", lambda: made)
    return made


def test_a_quick_answer_prints_nothing(recorder):
    with console.announcing_kafka("broker:9092", after_s=60):
        pass

    assert recorder.lines == []


def test_a_slow_answer_says_where_it_connects(recorder):
    with console.announcing_kafka("broker:9092", after_s=0):
        assert recorder.printed.wait(10), "nothing printed"

    assert recorder.lines == ["connecting to Kafka at broker:9092 ..."]


def test_the_note_never_shows_a_password_given_in_the_bootstrap_servers(recorder):
    with console.announcing_kafka("SASL_SSL://alice:Pw0rdZ@broker:9092", after_s=0):
        assert recorder.printed.wait(10), "nothing printed"

    assert recorder.lines == ["connecting to Kafka at SASL_SSL://alice:[REDACTED]@broker:9092 ..."]


def test_a_note_being_printed_when_the_answer_comes_is_done_before_the_command_goes_on(
    monkeypatch: pytest.MonkeyPatch,
):
    said: list[str] = []
    note_started = threading.Event()

    class SlowConsole:
        def print(self, text: str) -> None:
            note_started.set()
            threading.Event().wait(0.3)  # rich writing the line while the answer comes
            said.append(text)

    monkeypatch.setattr(console, "stderr_console", SlowConsole)
    with console.announcing_kafka("broker:9092", after_s=0):
        assert note_started.wait(10), "the note never started"
    said.append("error: Kafka at broker:9092 refused the connection")

    assert said == [
        "connecting to Kafka at broker:9092 ...",
        "error: Kafka at broker:9092 refused the connection",
    ]
