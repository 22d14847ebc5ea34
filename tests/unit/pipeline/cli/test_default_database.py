"""One obvious database: by default the SQLite file in the stack's home, whatever the current
folder; programs say which database they use; a read-only command never creates one."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app, with_default_database
from pipeline.settings import PipelineSettings
from tests.support.stack_cli import PIPELINE


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A stack home and a current folder of their own; no database configured."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    for name in [name for name in os.environ if name.startswith("PIPELINE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIPELINE_STACK__HOME", str(home))
    monkeypatch.chdir(work)
    return home, work


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PIPELINE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=os.environ
    )


def test_the_default_database_is_the_file_in_the_stack_home_whatever_the_folder(places):
    home, _ = places

    settings = with_default_database(PipelineSettings())

    assert settings.database.url == f"sqlite:///{home / 'pipeline.db'}"


def test_a_configured_database_is_kept(places, monkeypatch):
    monkeypatch.setenv("PIPELINE_DATABASE__URL", "sqlite:///mine.db")

    assert with_default_database(PipelineSettings()).database.url == "sqlite:///mine.db"


def test_outbox_status_never_creates_a_database(places):
    home, work = places

    result = _run("outbox", "status", cwd=work)

    assert result.returncode == 2, result.stderr
    assert f"database: sqlite:///{home / 'pipeline.db'}" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: no database at {home / 'pipeline.db'}: no program has written to it yet (set "
        "PIPELINE_DATABASE__URL to the database your programs use)"
    ], result.stderr
    assert not (home / "pipeline.db").exists()
    assert list(work.iterdir()) == []


def test_outbox_status_on_a_database_without_an_outbox_says_so_and_migrates_nothing(
    places, monkeypatch
):
    _, work = places
    path = work / "other.db"
    sqlite3.connect(path).close()
    monkeypatch.setenv("PIPELINE_DATABASE__URL", f"sqlite:///{path}")

    result = _run("outbox", "status", cwd=work)

    assert result.returncode == 2, result.stderr
    assert f"error: no outbox in sqlite:///{path}: no program has written to this database yet" in (
        result.stderr
    )
    with sqlite3.connect(path) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert tables == []


def test_process_says_which_database_it_uses_and_creates_its_folder(places, monkeypatch):
    home, _ = places
    used: list[PipelineSettings] = []
    checked: list[list[str]] = []
    # A unit test: no broker. The topic check and the runtime are replaced; what is under test
    # is which database the command announces, hands on and makes a folder for.
    monkeypatch.setattr("pipeline.kafka.clients.build_admin", lambda kafka: object())
    monkeypatch.setattr(
        "pipeline.topics.admin.describe_cluster_topics",
        lambda admin, topics, bootstrap: checked.append(list(topics)),
    )
    monkeypatch.setattr(
        "pipeline.processing.faust.app.run_processor",
        lambda processor, settings: used.append(settings),
    )

    result = CliRunner().invoke(app, ["process", "tests.support.effects_processor:processor"])

    assert result.exit_code == 0, result.output
    assert f"database: sqlite:///{home / 'pipeline.db'}" in result.stderr
    assert [settings.database.url for settings in used] == [f"sqlite:///{home / 'pipeline.db'}"]
    assert home.is_dir()
    assert len(checked) == 1
