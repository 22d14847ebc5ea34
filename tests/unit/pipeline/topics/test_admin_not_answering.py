"""What a command says when Kafka does not answer where something listens: the setting to check,
for the security protocol the client was given."""

from __future__ import annotations

import pytest

from pipeline.topics import admin


@pytest.fixture
def something_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin, "port_answers", lambda *args, **kwargs: True)


@pytest.mark.usefixtures("something_listens")
def test_an_ssl_client_is_told_the_listener_may_also_want_a_sasl_login() -> None:
    # An SSL client at a SASL_SSL listener: its handshake succeeds, then nothing answers. It
    # was asked only whether the listener takes SSL, which it does.
    said = str(admin._not_answering("127.0.0.1:19092", "Local: Timed out", "SSL"))

    assert "is it a Kafka listener that takes SSL or SASL_SSL, if it also wants a login " in said


@pytest.mark.usefixtures("something_listens")
def test_a_sasl_client_is_asked_only_about_its_own_protocol() -> None:
    said = str(admin._not_answering("127.0.0.1:19092", "Local: Timed out", "SASL_SSL"))

    assert "is it a Kafka listener that takes SASL_SSL (PIPELINE_KAFKA__SECURITY_PROTOCOL)?" in said


@pytest.mark.usefixtures("something_listens")
def test_the_text_a_long_running_program_gives_is_the_commands_own() -> None:
    said = admin.not_answering_text("127.0.0.1:19092", "Local: Broker transport failure")

    assert said.startswith("Kafka at 127.0.0.1:19092 does not answer (Local: Broker transport")
    assert "set PIPELINE_KAFKA__SECURITY_PROTOCOL" in said
