"""``pipeline stack`` refuses a secured cluster's client settings (the secure stack's
pipeline.env loaded in the shell) before it touches anything."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.errors import PipelineError

SECURE_CLIENT = {
    "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9102",
    "PIPELINE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
    "PIPELINE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
}


@pytest.mark.parametrize(
    "command",
    [["up", "--secure"], ["status"], ["status", "--secure"], ["down", "--secure"]],
    ids=["up-secure", "status", "status-secure", "down-secure"],
)
def test_every_stack_command_refuses_a_secure_clients_settings_in_one_line(
    command, monkeypatch, tmp_path
):
    monkeypatch.setenv("PIPELINE_STACK__HOME", str(tmp_path))
    for name, value in SECURE_CLIENT.items():
        monkeypatch.setenv(name, value)

    result = CliRunner().invoke(app, ["stack", *command])

    # A PipelineError: the entry point prints it as one line and exits 2.
    assert isinstance(result.exception, PipelineError), result.output
    assert "PIPELINE_KAFKA__SECURITY_PROTOCOL is SASL_SSL here" in str(result.exception)
    assert list(tmp_path.iterdir()) == []  # nothing written, no secure stack files
