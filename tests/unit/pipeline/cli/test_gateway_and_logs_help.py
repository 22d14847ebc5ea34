"""Help that says what a command does: ``pipeline gateway``'s sub-command is optional (without one
it serves), ``pipeline gateway keys`` alone shows its help as ``pipeline topics`` does, and
``logs ship --group`` shows its default's value."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app


def _help(*args):
    return CliRunner().invoke(app, [*args, "-h"], env={"COLUMNS": "200"}).output


def test_gateway_usage_shows_the_sub_command_is_optional():
    assert "Usage: pipeline gateway [OPTIONS] [COMMAND [ARGS]...]" in _help("gateway")
    # Its group of sub-commands keeps the required form.
    assert "Usage: pipeline gateway keys [OPTIONS] COMMAND [ARGS]..." in _help("gateway", "keys")


@pytest.mark.parametrize("group", [["topics"], ["gateway", "keys"]], ids=" ".join)
def test_a_group_without_its_sub_command_shows_its_help_and_exit_2(group):
    result = CliRunner().invoke(app, group, env={"COLUMNS": "200"})

    assert result.exit_code == 2
    assert f"Usage: pipeline {' '.join(group)} [OPTIONS] COMMAND" in result.output
    assert "Missing command" not in result.output


def test_logs_ship_group_shows_the_default_group_name():
    line = next(line for line in _help("logs", "ship").splitlines() if "--group" in line)

    assert "PIPELINE_LOGS__SHIPPER_GROUP, else pipeline-log-shipper" in line
