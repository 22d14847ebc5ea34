"""Help pages read cleanly: no Python type labels such as <bool>, <str> or <int range>."""

from __future__ import annotations

import re

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from pipeline.cli.main import app

#: The labels Typer 0.2x prints after a parameter: <bool>, <str>, <int range>, <list[str]>,
#: <file>, <table|ndjson> ...
TYPE_LABEL = re.compile(
    r"<(?:bool|str|int|float|file|path|datetime|uuid|[a-z]+ range|list\[[^>]*\]"
    r"|[\w-]+(?:\|[\w-]+)+)>"
)


def _command_paths(command, path=()):
    paths = [path]
    if isinstance(command, TyperGroup):
        # Listed and got as Click does: `pipeline` imports each command when it is asked for.
        context = typer.Context(command)
        for name in sorted(command.list_commands(context)):
            paths.extend(_command_paths(command.get_command(context, name), (*path, name)))
    return paths


COMMAND_PATHS = _command_paths(typer.main.get_command(app))


def test_every_command_is_checked():
    assert ("consume",) in COMMAND_PATHS
    assert ("dlq", "inspect") in COMMAND_PATHS
    assert len(COMMAND_PATHS) > 20


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "pipeline")
def test_help_has_no_type_labels(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert TYPE_LABEL.findall(result.output) == [], result.output


def test_options_show_their_metavar_or_choices_and_flags_show_nothing():
    result = CliRunner().invoke(app, ["dlq", "inspect", "--help"], env={"COLUMNS": "200"})
    lines = {line.split()[1]: line for line in result.output.splitlines() if "│ --" in line}

    assert "table|ndjson" in lines["--output"]
    assert "KEY" in lines["--key"]
    assert lines["--show-redriven"].split()[2:4] == ["Also", "show"]
