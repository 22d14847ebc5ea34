"""Test sessions sharing the stack: the last to leave stops what any of them started (make
test runs two sessions at once, and the one that started a component may leave first)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.testing.fixtures import _shared_stack


class FakeManager:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.starts: list[set[str]] = []
        self.stopped: list[set[str]] = []

    def up(self, only: set[str]) -> set[str]:
        return self.starts.pop(0) if self.starts else set()

    def status(self) -> str:
        return "up"

    def down(self, only: set[str]) -> None:
        self.stopped.append(set(only))


class FakeRequest:
    def __init__(self, keep: bool = False) -> None:
        options = {"--pipeline-stack": "local", "--pipeline-keep-stack": keep}
        self.config = type("Config", (), {"getoption": staticmethod(options.__getitem__)})()


def session(manager: FakeManager, keep: bool = False) -> Any:
    running = _shared_stack(FakeRequest(keep), manager, {"kafka", "postgres"}, "sessions")
    assert next(running) == "up"
    return running


def test_the_last_session_to_leave_stops_what_another_one_started(tmp_path: Path) -> None:
    manager = FakeManager(tmp_path)
    manager.starts = [{"kafka"}]
    starter = session(manager)  # starts Kafka
    other = tmp_path / "sessions" / str(os.getppid())  # another session, still running
    other.touch()

    starter.close()  # leaves first: the other one still uses Kafka
    assert manager.stopped == []

    other.unlink()  # the other session, leaving last (it started nothing itself)
    session(manager).close()

    assert manager.stopped == [{"kafka"}]
    assert not list((tmp_path / "sessions").glob("started-*"))


def test_a_session_alone_stops_what_it_started_unless_asked_to_keep_it(tmp_path: Path) -> None:
    manager = FakeManager(tmp_path)
    manager.starts = [{"postgres"}, {"kafka"}]

    session(manager).close()
    session(manager, keep=True).close()
    session(manager).close()  # started nothing, and nothing is left to stop

    assert manager.stopped == [{"postgres"}]
