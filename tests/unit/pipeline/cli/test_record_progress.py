"""The live rate of `pipeline record` (and replay) on a terminal: of the last seconds, so it
falls to nothing when messages stop coming instead of showing the last busy rate for ever."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pipeline.cli import record


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_live_rate_falls_to_nothing_when_messages_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True, width=100)
    monkeypatch.setattr(record, "_err", terminal)
    progress = record.CountProgress("recording")
    assert progress._live is not None
    clock = Clock()
    progress._live.get_time = clock
    task = progress._live.tasks[0]

    def rate() -> str:
        return record._RateColumn().render(task).plain

    for second in range(4):  # 1,000 messages a second
        clock.now = float(second)
        progress.advance(1_000)
    busy = rate()
    for second in range(4, 12):  # then nothing: each poll reports 0
        clock.now = float(second)
        progress.advance(0)

    assert busy == "1,000/s"
    assert rate() == ""
    assert progress.count == 4_000
