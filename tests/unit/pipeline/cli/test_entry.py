"""The ``pipeline`` entry point: Ctrl-C while the command line still loads is no traceback."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

# Ctrl-C lands while pipeline.cli.main is being imported (typer, pydantic: about 0.2 s).
INTERRUPTED_WHILE_LOADING = """
import sys
from importlib.abc import MetaPathFinder

class CtrlC(MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "pipeline.cli.main":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
from pipeline.cli.entry import run
run()
"""


def test_ctrl_c_while_the_command_line_loads_exits_130_without_a_traceback() -> None:
    found = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_LOADING],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert found.returncode == 130
    assert "Traceback" not in found.stderr
    assert found.stderr == ""


def test_the_pipeline_command_is_the_entry_point() -> None:
    pyproject = tomllib.loads(Path(__file__).parents[4].joinpath("pyproject.toml").read_text())

    assert pyproject["project"]["scripts"]["pipeline"] == "pipeline.cli.entry:run"
