"""``pipeline replay``'s summary and progress line, Kafka replaced by stand-ins and the clock by
one the test moves: the summary gives the time sending (and its rate) and, for a file, the
whole time with the check before it (and that rate); the progress line's rate counts from when
the sending started, as the summary's sending rate does."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import pipeline.replay.processes
import pipeline.replay.replayer
from pipeline.cli import record, replay
from pipeline.cli.main import app
from pipeline.replay.recording import RecordedMessage
from pipeline.replay.replayer import ReplayFailed, ReplayInterrupted, ReplaySummary
from pipeline.replay.routing import survey


class Clock:
    """``time.monotonic`` as the test sets it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock of the progress line (pipeline.cli.record) and of the summary's whole time
    (pipeline.cli.replay), at 0 when the command starts."""
    clock = Clock()
    fake_time = SimpleNamespace(monotonic=clock)
    monkeypatch.setattr(record, "time", fake_time)
    # raising=False: the code before this test had no clock of its own in replay.py.
    monkeypatch.setattr(replay, "time", fake_time, raising=False)
    return clock


def _rows(output: str, title: str = "replayed") -> dict[str, str]:
    """The rows of the summary table ``title`` in ``output``: what to value."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            break
        cells = line.split("│")
        if len(cells) == 4:
            rows[cells[1].strip()] = cells[2].strip()
    return rows


MESSAGES = 1_000


#: What the stand-in of the sending does, given the progress callback.
Sending = Callable[[Callable[[int], None]], ReplaySummary]


def _file_replay(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, tmp_path: Path, sending: Sending
) -> tuple[int, str]:
    """``pipeline replay FILE`` whose check takes 20 s, then ``sending(on_progress)``."""

    def replay_recording(
        kafka: Any, path: Any, *, on_checked: Any, on_progress: Any, **options: Any
    ) -> ReplaySummary:
        clock.now = 20.0  # reading and checking the whole file
        on_checked(survey([RecordedMessage("t", 0, n, None, b"v") for n in range(MESSAGES)]), 1)
        return sending(on_progress)

    monkeypatch.setattr(pipeline.replay.processes, "replay_recording", replay_recording)
    recording = tmp_path / "r.ndjson"
    recording.write_text("")
    result = CliRunner().invoke(app, ["replay", str(recording)], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_the_summary_gives_the_time_sending_and_the_whole_time_with_the_check(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, tmp_path: Path
) -> None:
    # An outside review: "elapsed 1.17 s", "rate 256,994 messages/s" for a replay that ran
    # 3.6 s, most of it checking the file before sending: nothing said the check was left out.
    def sending(on_progress: Callable[[int], None]) -> ReplaySummary:
        clock.now = 30.0
        on_progress(MESSAGES)
        return ReplaySummary(MESSAGES, {"t": MESSAGES}, 10.0)  # sent in 10 s of the 30

    code, output = _file_replay(monkeypatch, clock, tmp_path, sending)

    assert code == 0, output
    assert _rows(output) == {
        "sent (acknowledged)": "1,000",
        "sending": "10.00 s, 100 messages/s",
        "in all (reading and checking the file first)": "30.00 s, 33 messages/s",
    }


def test_the_progress_rate_counts_from_when_the_sending_started(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, tmp_path: Path
) -> None:
    # An outside review, --rate 25000/s: "replaying: 140,084 messages, 14,008/s", the check
    # counted, while the summary said 24,998/s.
    def sending(on_progress: Callable[[int], None]) -> ReplaySummary:
        clock.now = 25.0
        on_progress(400)  # 5 s into the sending: no line yet (one every 10 s)
        clock.now = 30.0
        on_progress(600)  # 10 s into it: 1,000 in 10 s
        return ReplaySummary(MESSAGES, {"t": MESSAGES}, 10.0)

    code, output = _file_replay(monkeypatch, clock, tmp_path, sending)

    assert code == 0, output
    progress = [line for line in output.splitlines() if line.startswith("replaying: ")]
    assert progress == ["replaying: 1,000 messages, 100/s"]
    assert _rows(output)["sending"] == "10.00 s, 100 messages/s"  # the same rate


def test_a_failed_replay_s_summary_gives_both_times_too(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, tmp_path: Path
) -> None:
    def sending(on_progress: Callable[[int], None]) -> ReplaySummary:
        clock.now = 24.0
        raise ReplayFailed(ReplaySummary(999, {"t": 999}, 4.0), 1, "Broker: too large")

    code, output = _file_replay(monkeypatch, clock, tmp_path, sending)

    assert code == 3, output
    assert _rows(output) == {
        "sent (acknowledged)": "999",
        "sending": "4.00 s, 250 messages/s",
        "in all (reading and checking the file first)": "24.00 s, 42 messages/s",
    }


def test_interrupted_during_the_check_the_sending_did_not_start(
    monkeypatch: pytest.MonkeyPatch, clock: Clock, tmp_path: Path
) -> None:
    def replay_recording(
        kafka: Any, path: Any, *, on_checked: Any, on_progress: Any, **options: Any
    ) -> ReplaySummary:
        clock.now = 5.0
        raise ReplayInterrupted(ReplaySummary(0, {}, 0.0), KeyboardInterrupt())

    monkeypatch.setattr(pipeline.replay.processes, "replay_recording", replay_recording)
    recording = tmp_path / "r.ndjson"
    recording.write_text("")
    result = CliRunner().invoke(app, ["replay", str(recording)], env={"COLUMNS": "200"})

    assert result.exit_code == 130, result.output
    assert _rows(result.output) == {
        "sent (acknowledged)": "0",
        "sending": "not started",
        "in all (reading and checking the file first)": "5.00 s",
    }


def test_stdin_read_as_it_is_sent_has_one_time_the_sending_s(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    def replay_into_kafka(
        kafka: Any, messages: Any, *, on_progress: Any, **options: Any
    ) -> ReplaySummary:
        sent = sum(1 for _ in messages)
        clock.now = 2.0
        on_progress(sent)
        return ReplaySummary(sent, {"t": sent}, 1.5)

    monkeypatch.setattr(pipeline.replay.replayer, "replay_into_kafka", replay_into_kafka)
    result = CliRunner().invoke(
        app, ["replay", "-"], input='{"topic":"t"}\n' * 3, env={"COLUMNS": "200"}
    )

    assert result.exit_code == 0, result.output
    assert _rows(result.output) == {"sent (acknowledged)": "3", "sending": "1.50 s, 2 messages/s"}


def test_the_bar_on_a_terminal_counts_its_time_from_when_the_sending_started(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True, width=100)
    monkeypatch.setattr(record, "_err", terminal)
    progress = record.CountProgress("replaying")
    assert progress._live is not None
    progress._live.get_time = clock
    task = progress._live.tasks[0]
    task._get_time = clock
    clock.now = 20.0  # the check

    progress.restart(MESSAGES)
    clock.now = 30.0
    progress.advance(400)

    assert task.total == MESSAGES
    assert task.elapsed == 10.0  # what the bar shows: 0:00:10, not 0:00:30
