"""The demo's "what to try next" line names the database the demo used, from the settings, and
never prints a password other than the stack's documented default."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from pipeline.cli.demo import _database_hint
from pipeline.settings import PipelineSettings, StackSettings


def test_default_stack_gives_a_url_to_paste(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_DATABASE__URL", raising=False)
    settings = PipelineSettings(stack=StackSettings(postgres_port=55432))

    hint = _database_hint(settings)

    assert "PIPELINE_DATABASE__URL=postgresql+psycopg://pipeline:pipeline@127.0.0.1:55432/" in hint


def test_a_password_of_ones_own_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_DATABASE__URL", raising=False)
    secret = "s3cret-Do-not-show"
    settings = PipelineSettings(stack=StackSettings(postgres_password=SecretStr(secret)))

    hint = _database_hint(settings)

    assert secret not in hint
    assert "postgresql+psycopg://pipeline@127.0.0.1:5432/pipeline" in hint
    assert "PIPELINE_DATABASE__PASSWORD" in hint


def test_a_configured_database_is_named_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_DATABASE__URL", "postgresql+psycopg://me:pw@db.example:5432/shop")

    hint = _database_hint(PipelineSettings())

    assert "PIPELINE_DATABASE__URL names" in hint
    assert "pw@" not in hint and "stack's PostgreSQL" not in hint
