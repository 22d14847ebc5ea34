"""``pipeline logs ship --help`` names the settings of the alias, the topic and the dead-letter
topic: it is built before settings are read, so it cannot show their values."""

from __future__ import annotations

from typer.testing import CliRunner

from pipeline.cli.main import app


def test_ship_help_names_the_settings_not_only_their_defaults():
    result = CliRunner().invoke(
        app,
        ["logs", "ship", "--help"],
        env={"COLUMNS": "200", "PIPELINE_LOGS__INDEX_ALIAS": "fxl-logs"},
    )
    text = " ".join(result.output.split())

    assert "alias PIPELINE_LOGS__INDEX_ALIAS (default pipeline-logs)" in text
    assert "dead-letter topic PIPELINE_LOGS__DLQ_TOPIC (default logs.dlq)" in text
    assert "behind the alias pipeline-logs" not in text
