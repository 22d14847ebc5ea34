"""The demo's hint for the dead letters names this run's only: `pipeline dlq inspect` since the
run began (it showed every earlier run's too: 88 for this run's 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipeline.cli import demo
from pipeline.cli.demo_services import ProcessingReport
from pipeline.logs.search import parse_since

#: 20:29:13.6 UTC, as a host an hour east of UTC reads it.
STARTED = datetime(2026, 12, 7, 21, 29, 13, 600_000, tzinfo=timezone(timedelta(hours=1)))


def test_the_hint_gives_the_runs_start_as_an_iso_utc_time() -> None:
    command = demo._dead_letters_command(STARTED)

    assert command == "pipeline dlq inspect requests.orders --since 2026-12-07T20:29:13Z"
    # The form `--since` takes (pipeline logs search's): no later than the run's start.
    assert parse_since(command.rsplit(" ", 1)[1]) == datetime(2026, 12, 7, 20, 29, 13, tzinfo=UTC)


def test_the_summary_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    demo._print_processing_summary(ProcessingReport(processed=2_613), STARTED)

    out = capsys.readouterr().out
    assert (
        "look at the dead letters:   pipeline dlq inspect requests.orders "
        "--since 2026-12-07T20:29:13Z"
    ) in out
    assert "2,613" in out
