"""Help pages read cleanly: no Python type labels such as <bool>, <str> or <int range>."""

from __future__ import annotations

import re
import shlex

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


def _command_at(words):
    """The command a ``pipeline ...`` line names, and the arguments left for it."""
    command = typer.main.get_command(app)
    while isinstance(command, TyperGroup) and words:
        sub = command.get_command(typer.Context(command), words[0])
        if sub is None:
            break
        command, words = sub, words[1:]
    return command, words


def _examples(path):
    command, _ = _command_at(list(path))
    text = command.help or ""
    if "Examples:" not in text:
        return []
    lines = text.split("Examples:", 1)[1].strip().splitlines()
    # The part of each line that runs pipeline: after a pipe into it, before a comment or a pipe.
    return [
        "pipeline " + line.split("pipeline ", 1)[1].split(" #")[0].split(" | ")[0].strip()
        for line in lines
        if "pipeline " in line
    ]


EXAMPLES = [(path, line) for path in COMMAND_PATHS for line in _examples(path)]


def test_the_commands_users_run_most_have_examples():
    with_examples = {" ".join(path) for path, _ in EXAMPLES}

    assert {
        "produce",
        "consume",
        "record",
        "replay",
        "process",
        "dlq inspect",
        "dlq redrive",
        "dlq discard",
        "saga list",
        "logs ship",
        "logs search",
        "outbox relay",
        "gateway",
    } <= with_examples


@pytest.mark.parametrize(("path", "line"), EXAMPLES, ids=[line for _, line in EXAMPLES])
def test_every_example_in_a_help_page_is_a_valid_command_line(path, line):
    # Click parses the line as it would run it: unknown options, bad choices or ranges, missing
    # arguments are each a usage error here.
    command, arguments = _command_at(shlex.split(line)[1:])

    # A line may show a neighbour (saga list's shows saga show), but never a command that is not.
    assert not isinstance(command, TyperGroup) or command.name == path[-1], line
    context = command.make_context("pipeline", arguments)
    assert context.command is command


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "pipeline")
def test_at_80_columns_no_help_text_is_cut_short(path):
    # A setting's name in an option's help showed as "PIPELINE_PROCESSING__MAX…".
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})

    assert result.exit_code == 0, result.output
    assert "…" not in result.output, result.output


#: Commands whose help got examples after an outside review found none there.
EXAMPLES_ADDED = [
    "topics apply",
    "topics list",
    "stack up",
    "stack status",
    "stack down",
    "stack logs",
    "db status",
    "db migrate",
    "dashboards export",
    "dashboards import",
    "dashboards template",
    "saga show",
    "saga resolve",
    "saga prune",
    "saga graph",
    "gateway keys add",
    "gateway keys list",
    "gateway keys revoke",
    "gateway keys rotate",
]


@pytest.mark.parametrize("command", ["saga list", "saga retry", *EXAMPLES_ADDED])
def test_examples_show_on_the_help_page_indented_under_their_heading(command):
    # Typer dedents the text after the first paragraph as one block: examples right under
    # it lost their indentation ("Examples:" flush with "pipeline saga list ...").
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    lines = result.output.splitlines()
    heading = next(index for index, line in enumerate(lines) if line.strip() == "Examples:")
    margin = len(lines[heading]) - len(lines[heading].lstrip())
    examples = lines[heading + 1 : heading + 1 + len(_examples(tuple(command.split())))]

    assert result.exit_code == 0, result.output
    assert examples, result.output
    for line in examples:
        assert len(line) - len(line.lstrip()) == margin + 2, result.output
