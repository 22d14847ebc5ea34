"""``stack up`` without a terminal (CI, a file): no spinner, so a step still going after a moment
says so on a line of its own; a quick one says nothing."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from pipeline.settings import PipelineSettings, StackSettings
from pipeline.stack import manager as stack_manager
from pipeline.stack.manager import StackManager


def _manager(tmp_path, out: io.StringIO) -> StackManager:
    console = Console(file=out, force_terminal=False, width=200)
    return StackManager(PipelineSettings(stack=StackSettings(home=tmp_path)), console=console)


def test_a_slow_step_is_said_on_a_line(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(stack_manager, "_SLOW_STEP_S", 0.01)
    out = io.StringIO()
    manager = _manager(tmp_path, out)

    with manager._progress("Fetching Kafka 3.9.1 from Maven Central"):
        time.sleep(0.3)

    assert out.getvalue() == "Fetching Kafka 3.9.1 from Maven Central ...\n"


def test_a_quick_step_says_nothing(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(stack_manager, "_SLOW_STEP_S", 5.0)
    out = io.StringIO()
    manager = _manager(tmp_path, out)

    with manager._progress("Fetching Kafka 3.9.1 from Maven Central"):
        pass
    time.sleep(0.05)

    assert out.getvalue() == ""
