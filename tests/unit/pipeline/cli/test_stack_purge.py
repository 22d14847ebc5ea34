"""``pipeline stack down --purge`` on a stack home of the test's own (no process runs): with
``--only``, one component's data; ``--secure --purge`` works when the credentials are unreadable,
as their error advises, and the next ``up --secure`` makes new ones."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.settings import PipelineSettings, StackSettings
from pipeline.stack.secure import SecureStack


@pytest.fixture(autouse=True)
def nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """No server answers at the stack's ports (unit tests have no network)."""
    monkeypatch.setattr("pipeline.stack.manager.port_answers", lambda host, port: False)


def _invoke(*args: str):
    return CliRunner().invoke(app, ["stack", *args], env={"COLUMNS": "200"})


def test_down_only_purge_keeps_the_other_components_data(
    tmp_path, clean_pipeline_environment, monkeypatch
):
    monkeypatch.setenv("PIPELINE_STACK__HOME", str(tmp_path))
    for name in ("kafka", "elasticsearch", "postgres"):
        (tmp_path / "state" / name / "data").mkdir(parents=True)
        (tmp_path / "state" / name / "data" / "stored").write_text(name)

    result = _invoke("down", "--only", "elasticsearch", "--purge")

    assert result.exit_code == 0, result.output
    assert not (tmp_path / "state" / "elasticsearch").exists()
    assert (tmp_path / "state" / "kafka" / "data" / "stored").read_text() == "kafka"
    assert (tmp_path / "state" / "postgres" / "data" / "stored").read_text() == "postgres"


def test_down_secure_purge_deletes_a_secure_stack_with_unreadable_credentials(
    tmp_path, clean_pipeline_environment, monkeypatch
):
    monkeypatch.setenv("PIPELINE_STACK__HOME", str(tmp_path))
    secure = SecureStack(PipelineSettings(stack=StackSettings(home=tmp_path)))
    secure.prepare()
    secure.credentials_file.write_text('{"kafka": "x"}')  # incomplete
    (secure.home / "state" / "kafka").mkdir(parents=True)

    refused = _invoke("status", "--secure")
    assert refused.exit_code != 0
    assert "pipeline stack down --secure --purge" in str(refused.exception) + refused.output

    result = _invoke("down", "--secure", "--purge")

    assert result.exit_code == 0, result.output
    assert "nothing of ours was running" in result.output
    assert not (secure.home / "state").exists()
    assert not secure.credentials_file.exists()
    assert secure.load_credentials() is None  # the next `up --secure` makes new ones


def test_the_purge_help_says_what_it_deletes():
    result = _invoke("down", "--help")

    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert "Kafka's topics, Elasticsearch's indices and PostgreSQL's databases" in text
    assert "with --only, that component's alone" in text
