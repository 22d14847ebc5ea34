"""The demo's summary tables keep their titles on one line on a terminal wide enough for them
(rich wrapped a long title into the width of two short columns)."""

from __future__ import annotations

import io

from rich.console import Console

from pipeline.cli import demo

TITLE = "CreateOrder sagas (pipeline process consumers.saga_orchestrator:processor)"


def test_a_long_title_stays_on_one_line_over_short_columns() -> None:
    table = demo._titled(TITLE)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("sagas started", "852")
    screen = io.StringIO()

    Console(file=screen, width=120, force_terminal=False).print(table)

    assert TITLE in screen.getvalue()
