"""``pipeline db status`` and ``pipeline db migrate``: where a database's schema stands, and
bringing it to the newest revision before a roll-out."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from typer.testing import CliRunner

from pipeline.cli.db import EXIT_BEHIND
from pipeline.cli.main import app
from pipeline.database import HEAD_REVISION, _alembic_config, build_engine
from pipeline.errors import PipelineError
from pipeline.settings import DatabaseSettings


def run(path: Path, *words: str):
    return CliRunner().invoke(
        app, ["db", *words], env={"PIPELINE_DATABASE__URL": f"sqlite:///{path}", "COLUMNS": "200"}
    )


def migrated_to(path: Path, revision: str) -> None:
    """``path`` migrated as far as ``revision`` only (as an older version of the pipeline did)."""
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    try:
        with engine.connect() as connection:
            command.upgrade(_alembic_config(connection), revision)
            connection.commit()
    finally:
        engine.dispose()


def test_status_of_a_database_no_program_made_is_one_line_and_creates_nothing(tmp_path):
    missing = tmp_path / "pipeline.db"

    result = run(missing, "status")

    assert isinstance(result.exception, PipelineError)
    assert f"no database at {missing}" in str(result.exception)
    assert not missing.exists()


def test_migrate_makes_a_new_database_current_and_a_second_run_has_nothing_to_do(tmp_path):
    path = tmp_path / "pipeline.db"

    first = run(path, "migrate")
    again = run(path, "migrate")
    status = run(path, "status")

    assert first.exit_code == 0, first.output
    assert f"schema migrated from nothing (a new database) to {HEAD_REVISION}" in first.output
    assert f"schema already at {HEAD_REVISION}: nothing to do" in again.output
    assert status.exit_code == 0, status.output
    assert "to migrate" not in status.output
    assert status.output.count(HEAD_REVISION) == 2  # the revision and the newest known


def test_status_of_an_older_schema_lists_what_migrate_applies_and_exits_3(tmp_path):
    path = tmp_path / "pipeline.db"
    migrated_to(path, "0005_saga_steps_handled_at")

    behind = run(path, "status")

    assert behind.exit_code == EXIT_BEHIND == 3, behind.output
    pending = [
        "0006_parked_keys_last_event",
        "0007_sagas_next_resend",
        "0008_sagas_namespace",
        "0009_gateway_keys_rotation",
    ]
    places = [behind.output.find(f"{revision}: ") for revision in pending]
    assert -1 not in places and places == sorted(places), behind.output  # oldest first
    assert "0005_saga_steps_handled_at: " not in behind.output  # applied already
    assert "The latest dead letter of a parked key" in behind.output  # what each one adds
    assert "4 migrations to apply: pipeline db migrate" in behind.output

    migrated = run(path, "migrate")

    assert f"schema migrated from 0005_saga_steps_handled_at to {HEAD_REVISION}" in migrated.output
    assert run(path, "status").exit_code == 0


def test_a_schema_a_newer_version_migrated_is_one_line_and_left_alone(tmp_path):
    path = tmp_path / "pipeline.db"
    run(path, "migrate")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")

    result = run(path, "status")

    assert isinstance(result.exception, PipelineError)
    assert "is at schema revision 0099_from_the_future, which this version" in str(result.exception)
