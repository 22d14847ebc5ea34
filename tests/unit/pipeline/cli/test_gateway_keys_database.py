"""``pipeline gateway keys list|revoke`` only read or change keys that exist: a database no
program wrote to is an error, not an empty one made on the spot (which said "the gateway is
open")."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.database import HEAD_REVISION
from pipeline.errors import PipelineError


@pytest.mark.parametrize("command", [["list"], ["revoke", "shop"]], ids=["list", "revoke"])
def test_list_and_revoke_refuse_a_database_that_does_not_exist(command, tmp_path):
    missing = tmp_path / "typo" / "pipeline.db"

    result = CliRunner().invoke(
        app,
        ["gateway", "keys", *command],
        env={"PIPELINE_DATABASE__URL": f"sqlite:///{missing}"},
    )

    assert isinstance(result.exception, PipelineError), result.output
    assert f"no database at {missing}" in str(result.exception)
    assert not missing.parent.exists()


def _schema(path):
    import sqlite3

    with sqlite3.connect(path) as connection:
        return sorted(connection.execute("SELECT type, name FROM sqlite_master").fetchall())


@pytest.mark.parametrize("command", [["list"], ["revoke", "shop"]], ids=["list", "revoke"])
@pytest.mark.parametrize("other", ["another application's", "empty"])
def test_list_and_revoke_never_migrate_a_database_that_is_there(command, other, tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    path.touch()  # a zero-byte file is an empty SQLite database
    if other != "empty":
        with sqlite3.connect(path) as connection:
            connection.execute("CREATE TABLE foo (x)")
    before = _schema(path)

    result = CliRunner().invoke(
        app,
        ["gateway", "keys", *command],
        env={"PIPELINE_DATABASE__URL": f"sqlite:///{path}"},
    )

    assert isinstance(result.exception, PipelineError), result.output
    assert str(result.exception).startswith(f"no API keys in sqlite:///{path}: ")
    assert "gateway is open" not in result.output
    assert _schema(path) == before


def test_add_still_migrates_and_list_then_reads(tmp_path):
    path = tmp_path / "pipeline.db"
    env = {"PIPELINE_DATABASE__URL": f"sqlite:///{path}"}

    added = CliRunner().invoke(
        app, ["gateway", "keys", "add", "shop", "--types", "place_order"], env=env
    )
    listed = CliRunner().invoke(app, ["gateway", "keys", "list"], env=env)

    assert added.exit_code == 0, added.output
    assert listed.exit_code == 0, listed.output
    assert "shop" in listed.output


def test_add_says_when_it_migrated_the_database_and_not_when_it_did_not(tmp_path):
    # It migrated a shared database without a word (the migration's log line is INFO, and the
    # command logs warnings only).
    env = {"PIPELINE_DATABASE__URL": f"sqlite:///{tmp_path / 'pipeline.db'}"}

    first = CliRunner().invoke(
        app, ["gateway", "keys", "add", "shop", "--types", "place_order"], env=env
    )
    second = CliRunner().invoke(
        app, ["gateway", "keys", "add", "mall", "--types", "place_order"], env=env
    )

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    said = f"schema migrated from nothing (a new database) to {HEAD_REVISION}"
    assert said in first.output
    assert "schema migrated" not in second.output
