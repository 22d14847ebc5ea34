"""``pipeline outbox relay``: with --once its summary table alone on stdout, no log lines in
it; running, a first line that says where it relays and how it stops."""

from __future__ import annotations

import io
import os
import signal
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.orm import Session

from pipeline.cli.outbox import summary_table
from pipeline.database import build_engine, migrate
from pipeline.envelope import Event
from pipeline.outbox.table import add_to_outbox, outbox_lease_table, utc_now
from pipeline.settings import DatabaseSettings
from producers.outbox_relay import RelayTotals
from tests.support.stack_cli import PIPELINE, first_said, run_pipeline

ROWS = 3


def _rendered(totals: RelayTotals) -> str:
    """The table as the command prints it to a pipe (160 columns, no colour)."""
    out = io.StringIO()
    Console(file=out, width=160, highlight=False).print(summary_table(totals))
    return out.getvalue()


def test_stdout_is_exactly_the_summary_table(
    new_topic: Callable[..., str],
    tmp_path: Path,
    pipeline_stack: object,
    monkeypatch: pytest.MonkeyPatch,
):
    topic = new_topic(partitions=1)
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    engine = build_engine(DatabaseSettings(url=url))
    migrate(engine)
    with Session(engine) as session, session.begin():
        for n in range(ROWS):
            add_to_outbox(
                session,
                Event(source="/tests", type="Noted", data={"n": n}),
                aggregate_type="note",
                aggregate_id=f"n{n}",
                topic=topic,
            )
    engine.dispose()
    monkeypatch.delenv("PIPELINE_LOGS__LEVEL", raising=False)  # the default level is tested

    result = run_pipeline(
        "outbox", "relay", "--once", env={"PIPELINE_DATABASE__URL": url}, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == _rendered(RelayTotals(published=ROWS, batches=1)), result.stdout
    # Quiet by default: nothing went wrong, so no log line on stderr either.
    assert not any(line.startswith("{") for line in result.stderr.splitlines()), result.stderr


def test_a_sqlite_file_that_is_not_there_is_made_and_said_so(
    tmp_path: Path, pipeline_stack: object, monkeypatch: pytest.MonkeyPatch
):
    mistyped = tmp_path / "outbx.db"
    monkeypatch.delenv("PIPELINE_LOGS__LEVEL", raising=False)

    result = run_pipeline(
        "outbox",
        "relay",
        "--once",
        env={"PIPELINE_DATABASE__URL": f"sqlite:///{mistyped}"},
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert mistyped.exists()  # the relay may start before the service that writes the outbox
    assert f"no database at {mistyped} yet" in result.stderr, result.stderr
    assert "PIPELINE_DATABASE__URL" in result.stderr, result.stderr


def test_an_existing_sqlite_file_gets_no_such_warning(
    tmp_path: Path, pipeline_stack: object, monkeypatch: pytest.MonkeyPatch
):
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    migrate(build_engine(DatabaseSettings(url=url)))
    monkeypatch.delenv("PIPELINE_LOGS__LEVEL", raising=False)

    result = run_pipeline("outbox", "relay", "--once", env={"PIPELINE_DATABASE__URL": url})

    assert result.returncode == 0, result.stderr
    assert "no database at" not in result.stderr, result.stderr


def test_a_running_relay_says_first_where_it_relays_and_how_it_stops(
    tmp_path: Path, pipeline_stack: object, monkeypatch: pytest.MonkeyPatch
):
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    migrate(build_engine(DatabaseSettings(url=url)))
    env = {
        **os.environ,
        "PIPELINE_DATABASE__URL": url,
        "PIPELINE_LOGS__CONSOLE": "text",
        "PIPELINE_OUTBOX__BATCH_SIZE": "123",
    }
    env.pop("PIPELINE_LOGS__LEVEL", None)  # the default level is tested
    relay = subprocess.Popen(
        [PIPELINE, "outbox", "relay"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert relay.stderr is not None
        assert first_said(relay.stderr).startswith("database: "), "the database comes first"
        started = first_said(relay.stderr)
    finally:
        relay.send_signal(signal.SIGTERM)
        out, rest = relay.communicate(timeout=60)

    assert "relaying the outbox to Kafka at " in started, started
    assert "batches of up to 123 rows" in started, started
    assert "Ctrl-C or SIGTERM stops it" in started, started
    assert relay.returncode == 0, rest
    assert "published (acknowledged and marked)" in out, out
    # Its log says why it stopped: a relay stopped by something else left no trace of it.
    assert "stopped by SIGTERM" in rest.splitlines()[-1], rest


def test_once_while_another_relay_holds_the_lease_says_so_and_exits_3(
    tmp_path: Path, pipeline_stack: object, monkeypatch: pytest.MonkeyPatch
):
    # A relay killed with SIGKILL keeps the SQLite lease until it expires: a --once run then
    # publishes nothing, and must not say "done" (exit 0) in silence, as from cron it did.
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    engine = build_engine(DatabaseSettings(url=url))
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(outbox_lease_table).values(
                name="relay", owner="killed:42", expires_at=utc_now() + timedelta(minutes=5)
            )
        )
    engine.dispose()
    monkeypatch.delenv("PIPELINE_LOGS__LEVEL", raising=False)

    result = run_pipeline("outbox", "relay", "--once", env={"PIPELINE_DATABASE__URL": url})

    assert result.returncode == 3, result.stderr
    assert "published nothing: the outbox lease is held by killed:42" in result.stderr
