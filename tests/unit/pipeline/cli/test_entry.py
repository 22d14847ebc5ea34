"""The ``pipeline`` entry point: Ctrl-C while the command line still loads is no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.cli.held_interrupts import interrupts_held

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


def test_a_ctrl_c_while_interrupts_are_held_lets_the_code_finish_then_interrupts() -> None:
    # pydantic wraps or drops a KeyboardInterrupt raised while it builds a model class.
    finished = []
    with pytest.raises(KeyboardInterrupt), interrupts_held():
        os.kill(os.getpid(), signal.SIGINT)
        finished.append("loaded")

    assert finished == ["loaded"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_ctrl_c_interrupts_held_change_nothing() -> None:
    with interrupts_held():
        pass

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_lazy_commands_are_loaded_with_interrupts_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.cli import lazy

    handlers = []

    def load_command(name: str, location: str) -> object:
        handlers.append(signal.getsignal(signal.SIGINT))
        return object()

    monkeypatch.setattr(lazy, "load_command", load_command)

    class Commands(lazy.LazyGroup):
        lazy_commands = {"demo": "somewhere:demo"}

    Commands(name="pipeline").get_command(None, "demo")  # type: ignore[arg-type]

    assert handlers and handlers[0] is not signal.default_int_handler


# The command has ended with exit code 3; Ctrl-C comes while Python winds down (an atexit
# flush of the logs to Kafka, say).
CTRL_C_AFTER_THE_END = """
import atexit, os, signal, sys, time
from pipeline.cli import main

def winding_down():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)  # not reached: the process leaves at the Ctrl-C

def command():
    atexit.register(winding_down)
    print("done: 3 letters redriven", flush=True)
    sys.exit(3)

main.run = command
from pipeline.cli.entry import run
run()
"""


def test_a_ctrl_c_after_the_command_ended_leaves_with_the_commands_exit_code() -> None:
    found = subprocess.run(
        [sys.executable, "-c", CTRL_C_AFTER_THE_END], capture_output=True, text=True, timeout=60
    )

    assert (found.returncode, found.stdout, found.stderr) == (3, "done: 3 letters redriven\n", "")


def test_the_exits_last_callback_leaves_ctrl_c_ignored_for_pythons_teardown() -> None:
    # Python puts the default action back for a handler set in Python as it tears down: a
    # Ctrl-C in those last milliseconds killed a finished command (130). An ignored one stays.
    from pipeline.cli.entry import ignore_ctrl_c_from_here

    before = signal.getsignal(signal.SIGINT)
    try:
        ignore_ctrl_c_from_here()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
