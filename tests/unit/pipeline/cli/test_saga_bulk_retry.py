"""The documented bulk retry (``saga list ... --ids-only | xargs -r pipeline saga retry``), run
as written in ``saga list --help``, ``saga retry --help`` and docs/sagas.md, when no saga
matches: nothing to do, exit code 0. Without ``-r``, GNU xargs ran ``saga retry`` once with
no id: ``error: Missing argument 'SAGA_ID'`` and xargs' exit code 123.

The lines run in bash, with the installed ``pipeline`` first on the PATH, on a SQLite database
of sagas none of which is stuck."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from pipeline.cli.main import app
from tests.unit.pipeline.cli.test_saga_cli import _sagas_in

DOCS = Path(__file__).parents[4] / "docs" / "sagas.md"


def _help_of(*path: str) -> str:
    command = typer.main.get_command(app)
    for name in path:
        command = command.get_command(typer.Context(command), name)  # type: ignore[attr-defined]
    return command.help or ""


def _bulk_lines() -> dict[str, list[str]]:
    """Each text's lines that pipe into ``xargs``, stripped of their comment."""
    texts = {
        "saga list --help": _help_of("saga", "list"),
        "saga retry --help": _help_of("saga", "retry"),
        "docs/sagas.md": DOCS.read_text(encoding="utf-8"),
    }
    return {
        where: [
            line.split(" #")[0].strip()
            for line in text.splitlines()
            if re.search(r"\|\s*xargs\b", line)
        ]
        for where, text in texts.items()
    }


def test_every_text_shows_the_bulk_retry_and_each_with_xargs_r():
    lines = _bulk_lines()

    assert all(lines.values()), lines
    for where, found in lines.items():
        for line in found:
            assert "| xargs -r pipeline saga retry" in line, f"{where}: {line}"


@pytest.mark.skipif(shutil.which("xargs") is None, reason="no xargs")
@pytest.mark.parametrize(
    ("where", "line"),
    [
        pytest.param(where, line, id=where)
        for where, found in _bulk_lines().items()
        for line in found
    ],
)
def test_the_bulk_retry_as_written_does_nothing_when_no_saga_is_stuck(
    tmp_path: Path, where: str, line: str
):
    database = _sagas_in(tmp_path, {"saga-even": 2})  # completed: nothing to retry
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("PIPELINE_")
    }
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["PIPELINE_DATABASE__URL"] = database

    ran = subprocess.run(
        ["bash", "-c", line],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert ran.returncode == 0, ran.stderr
    assert "Missing argument" not in ran.stderr
    assert ran.stdout == ""
