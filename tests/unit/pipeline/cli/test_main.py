"""``pipeline --help`` is fast: it imports none of the heavy libraries the commands use.

Each command imports them itself when it runs; help needs only the signatures. A fresh
interpreter shows what one help run imported (no timing).
"""

from __future__ import annotations

import os
import subprocess
import sys

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


@pytest.mark.parametrize(
    "command",
    [
        ["consume"],
        ["produce"],
        ["process"],
        ["demo"],
        ["dlq", "inspect"],
        ["dlq", "redrive"],
        ["topics", "apply"],
        ["stack", "up"],
        ["logs", "search"],
        ["dashboards", "template"],
        ["saga", "list"],
    ],
    ids=" ".join,
)
def test_a_command_help_imports_no_heavy_library(command):
    # SQLAlchemy is not checked here: the `pipeline` callback, which runs before a command's
    # help, works out the default database with pipeline.database.
    assert _heavy(_imported(*command, "--help"), HEAVY) == []
