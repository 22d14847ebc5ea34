"""A consistent command line: -h everywhere, --version, and help that matches what runs."""

from __future__ import annotations

from importlib import metadata

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import DISTRIBUTION, app
from pipeline.request_types import REQUEST_TYPES

COMMANDS = [
    [],
    ["consume"],
    ["produce"],
    ["process"],
    ["gateway"],
    ["outbox"],
    ["outbox", "status"],
    ["dlq", "inspect"],
    ["stack", "up"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pipeline")
def test_dash_h_is_help_like_dash_dash_help(command):
    short = CliRunner().invoke(app, [*command, "-h"], env={"COLUMNS": "120"})
    long = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})

    assert short.exit_code == 0, short.output
    assert short.output == long.output
    assert "Usage:" in short.output


def test_version_prints_the_installed_version():
    result = CliRunner().invoke(app, ["--version"])

    assert result.exit_code == 0, result.output
    assert result.output == f"pipeline {metadata.version(DISTRIBUTION)}\n"


def test_gateway_help_names_each_request_type_and_its_topic():
    result = CliRunner().invoke(app, ["gateway", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.replace("│", " ").split())

    for request in REQUEST_TYPES.values():
        assert f"{request.name} to {request.topic}" in text, text
