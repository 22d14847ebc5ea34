"""``pipeline`` starts fast: help imports none of the heavy libraries the commands use, and a
command imports no other command's module.

Each command imports them itself when it runs; help needs only the signatures. A fresh
interpreter shows what one help run imported (no timing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

#: Runs the command line with the given arguments, then prints every imported module on the
#: last line of stderr.
_WRAPPER = """
import sys
from pipeline.cli.main import app
try:
    app(sys.argv[1:], prog_name="pipeline")
except SystemExit:
    pass
print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""

#: What a help page must not import: the Elasticsearch client, Alembic, aiohttp, Faust.
HEAVY = ("elasticsearch", "alembic", "aiohttp", "faust", "aiokafka")


def _imported(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert "Usage:" in result.stdout, result.stdout + result.stderr
    return set(result.stderr.strip().splitlines()[-1].split())


def _heavy(modules: set[str], heavy: tuple[str, ...]) -> list[str]:
    return sorted({name.split(".")[0] for name in modules if name.split(".")[0] in heavy})


def test_pipeline_help_imports_no_heavy_library_nor_sqlalchemy():
    modules = _imported("--help")

    assert "typer" in modules  # the wrapper did report
    assert _heavy(modules, (*HEAVY, "sqlalchemy")) == []


def _every_command() -> list[list[str]]:
    """Every command and group of ``pipeline``, as the arguments that name it."""
    import typer
    import typer.main

    from pipeline.cli.main import app

    # Typer vendors its own Click: a group is a command with sub-commands, which it lists and
    # gets (``pipeline``'s own are imported when asked for).
    def walk(command: Any, path: list[str]) -> list[list[str]]:
        found = [path] if path else []
        if hasattr(command, "list_commands"):
            context = typer.Context(command)
            for name in sorted(command.list_commands(context)):
                found.extend(walk(command.get_command(context, name), [*path, name]))
        return found

    return walk(typer.main.get_command(app), [])


def test_every_group_and_top_level_command_is_among_those_checked():
    commands = {" ".join(command) for command in _every_command()}

    groups = {"stack", "topics", "outbox", "dlq", "logs", "saga", "dashboards"}
    programs = {"produce", "consume", "process", "gateway", "demo"}
    assert groups | programs <= commands
    assert {"stack up", "topics apply", "outbox status", "dlq redrive", "logs ship"} <= commands


@pytest.mark.parametrize("command", _every_command(), ids=" ".join)
def test_a_command_help_imports_no_heavy_library_nor_sqlalchemy(command):
    # The `pipeline` callback runs before a command's help too: it works out the default
    # database without SQLAlchemy (pipeline.default_database).
    assert _heavy(_imported(*command, "--help"), (*HEAVY, "sqlalchemy")) == []


def test_dlq_help_lists_the_reasons_without_loading_the_event_envelope():
    modules = _imported("dlq", "inspect", "--help")

    assert "pipeline.dead_letters.reasons" in modules
    assert sorted(name for name in modules if name.startswith("pipeline.envelope")) == []


def _command_modules() -> set[str]:
    """The modules of ``pipeline``'s sub-commands, as pipeline.cli.main names them."""
    from pipeline.cli.main import PipelineCommands

    return {location.partition(":")[0] for location in PipelineCommands.lazy_commands.values()}


@pytest.mark.parametrize(
    ("command", "needed"),
    [
        (["process"], {"pipeline.cli.process"}),
        # `pipeline outbox` says which database it uses as `pipeline process` does.
        (["outbox", "relay"], {"pipeline.cli.outbox", "pipeline.cli.process"}),
        (["stack", "up"], {"pipeline.cli.stack"}),
    ],
    ids=["process", "outbox relay", "stack up"],
)
def test_a_command_imports_no_other_command_module(command, needed):
    modules = _imported(*command, "--help")

    assert _command_modules() & modules == needed
    assert "pipeline.cli.dashboards" not in modules
    assert "pipeline.cli.gateway" not in modules
