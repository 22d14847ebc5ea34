"""``pipeline replay``'s options: how many processes it may start, the topic, the plan line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.cli.replay import _plan
from pipeline.replay.pacing import Pacing
from pipeline.replay.processes import MAX_PROCESSES, replay_recording
from pipeline.replay.recording import RecordedMessage
from pipeline.replay.replayer import ReplaySummary
from pipeline.replay.routing import ReplayError, survey
from pipeline.settings import KafkaSettings


def test_more_processes_than_the_most_a_replay_runs_is_a_usage_error(tmp_path):
    recording = tmp_path / "r.ndjson"
    recording.write_text('{"topic":"t"}\n')

    result = CliRunner().invoke(
        app, ["replay", str(recording), "-j", str(MAX_PROCESSES + 1)], env={"COLUMNS": "200"}
    )

    assert result.exit_code == 2
    assert f"less than or equal to {MAX_PROCESSES}" in result.output


def test_the_library_refuses_them_too_before_starting_any(tmp_path):
    recording = tmp_path / "r.ndjson"
    recording.write_text('{"topic":"t"}\n')

    try:
        replay_recording(KafkaSettings(), recording, processes=MAX_PROCESSES + 1)
    except ReplayError as error:
        assert f"at most {MAX_PROCESSES} processes" in str(error)
    else:
        raise AssertionError("no error")


#: The console script, as a user runs it (installed beside this interpreter).
PIPELINE = str(Path(sys.executable).with_name("pipeline"))


def test_an_empty_topic_is_a_usage_error_of_one_line_before_kafka_is_asked(tmp_path):
    recording = tmp_path / "r.ndjson"
    recording.write_text('{"topic":"t"}\n')

    found = subprocess.run(
        [PIPELINE, "replay", str(recording), "-t", ""],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )

    assert found.returncode == 2
    assert found.stderr.strip().splitlines() == [
        "error: Invalid value for '--topic' / '-t': must not be empty (see pipeline replay -h)"
    ]


@pytest.mark.parametrize("topic", [" ", "a b", "t/x"])
def test_a_topic_kafka_would_refuse_is_a_usage_error(tmp_path, topic):
    recording = tmp_path / "r.ndjson"
    recording.write_text('{"topic":"t"}\n')

    result = CliRunner().invoke(app, ["replay", str(recording), "--topic", topic])

    assert result.exit_code == 2
    assert "Invalid value for '--topic'" in result.output


def test_the_speed_plan_estimates_the_time_the_pacing_takes():
    stamps = [5_000, 7_000, 1_000]  # the last goes at once, after the second: 2 s in all
    found = survey(
        [RecordedMessage("t", 0, n, None, None, timestamp_ms=ts) for n, ts in enumerate(stamps)]
    )

    line = _plan(found, "rec.ndjson", Pacing(speed=1), None)
    twice = _plan(found, "rec.ndjson", Pacing(speed=2), None)

    assert "about 2.0 s" in line and "6.0" not in line
    assert "about 1.0 s" in twice


@pytest.mark.parametrize("topic", ["", "a b"])
def test_record_refuses_a_name_that_can_be_no_topics_before_kafka_is_asked(tmp_path, topic):
    # '' was looked up on Kafka, and refused as "no topic  on Kafka at ...".
    result = CliRunner().invoke(
        app, ["record", topic, "--until-end", "--out", str(tmp_path / "r.ndjson")]
    )

    assert result.exit_code != 0
    assert str(result.exception) == (
        f"cannot record: {topic!r} is not a Kafka topic name (1 to 249 letters, digits, '.', "
        "'_' and '-')"
    )
    assert not (tmp_path / "r.ndjson").exists()


def _replayed_by(monkeypatch, messages: int, processes: int, tmp_path: Path) -> str:
    """What ``pipeline replay`` says of a recording of ``messages`` that the library sends with
    ``processes`` processes (as many as cores, at most the target's partitions)."""
    import pipeline.replay.processes

    def sent(kafka, path, *, on_checked, on_progress, **options):
        found = survey([RecordedMessage("t", 0, n, None, b"v") for n in range(messages)])
        on_checked(found, processes)
        on_progress(messages)
        return ReplaySummary(messages, {"t": messages}, 0.1)

    monkeypatch.setattr(pipeline.replay.processes, "replay_recording", sent)
    recording = tmp_path / "huge.jsonl"
    recording.write_text("")
    result = CliRunner().invoke(app, ["replay", str(recording)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_a_recording_of_one_message_is_not_said_to_be_replayed_by_two_processes(
    monkeypatch, tmp_path
):
    # An outside review: "replaying 1 message from huge.jsonl into t, ..., 2 processes"; the
    # second had nothing to send.
    said = _replayed_by(monkeypatch, 1, 2, tmp_path)

    assert f"replaying 1 message from {tmp_path / 'huge.jsonl'} into t, as fast as possible\n" in (
        said
    )
    assert "processes" not in said


def test_no_more_processes_are_said_than_there_are_messages(monkeypatch, tmp_path):
    assert "as fast as possible, 3 processes\n" in _replayed_by(monkeypatch, 3, 4, tmp_path)
    assert "as fast as possible, 4 processes\n" in _replayed_by(monkeypatch, 9, 4, tmp_path)


@pytest.mark.parametrize(
    ("option", "value"), [("--speed", "1e3x"), ("--speed", "2.5X"), ("--rate", "1e9/s")]
)
def test_a_pace_float_reads_is_taken(tmp_path, option, value):
    # "1e3x" was refused as not "a factor above 0".
    recording = tmp_path / "r.ndjson"
    recording.write_text("")

    result = CliRunner().invoke(app, ["replay", str(recording), option, value])

    assert result.exit_code == 0, result.output
    assert "holds no message: nothing to replay" in result.output
