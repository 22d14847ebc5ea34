"""``pipeline replay``'s options: how many processes it may start."""

from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.replay.processes import MAX_PROCESSES, replay_recording
from pipeline.replay.routing import ReplayError
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
