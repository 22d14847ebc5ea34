"""Help pages read cleanly: no Python type labels such as <bool>, <str> or <int range>."""

from __future__ import annotations

import re

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from pipeline.cli.help import reflowed
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


def test_prose_is_reflowed_and_lists_keep_their_lines():
    text = """First line of a sentence
    that goes on here.

    Exit codes:
    0 done;
    2 usage error (a missing topic,
    Kafka unreachable).

    A list:
    - one
    - two
    """

    assert reflowed(text) == (
        "First line of a sentence that goes on here.\n\n"
        "Exit codes:\n0 done;\n2 usage error (a missing topic, Kafka unreachable).\n\n"
        "A list:\n- one\n- two"
    )


def test_a_number_in_running_prose_is_not_a_list_item():
    assert reflowed("Ctrl-C (exit code\n130) stops it.") == "Ctrl-C (exit code 130) stops it."


def test_command_help_shows_no_line_broken_mid_sentence():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})

    line = next(line for line in result.output.splitlines() if "│ process " in line)
    assert "concurrently across keys" in line, result.output
