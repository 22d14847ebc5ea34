"""``pipeline gateway`` on a port something already listens on: one line, exit code 2, before
anything else, one gateway as ``--workers N``. One gateway said the database, migrated a new
one (a SQLite file made), warned that no API key exists and asked Kafka first; ``--workers N``
migrated the database before its own check.

The port is a real listening socket on 127.0.0.1 (sockets on, for the loopback address only);
Kafka and the workers are replaced, and say when they are asked."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_socket import socket_allow_hosts
from typer.testing import CliRunner

from pipeline.cli import gateway as gateway_cli
from pipeline.cli.main import app
from pipeline.errors import PipelineError

pytestmark = pytest.mark.enable_socket


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program listens on."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield int(listener.getsockname()[1])


@pytest.fixture
def asked(
    clean_pipeline_environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> list[str]:
    """What the gateway went on to do: ask Kafka, build a Kafka client, start workers."""
    done: list[str] = []
    monkeypatch.setenv("PIPELINE_DATABASE__URL", f"sqlite:///{tmp_path / 'gateway.db'}")
    monkeypatch.setattr("pipeline.logs.configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(gateway_cli, "_check_kafka", lambda settings: done.append("kafka"))
    monkeypatch.setattr(
        "pipeline.kafka.clients.build_admin", lambda kafka: done.append("admin client")
    )
    monkeypatch.setattr(
        "pipeline.kafka.producer.build_event_producer", lambda *args: done.append("producer")
    )
    monkeypatch.setattr(
        "producers.gateway.workers.run_workers", lambda *args, **kwargs: done.append("workers")
    )
    # --workers needs PostgreSQL for the shared Idempotency-Keys: refused before the port else.
    monkeypatch.setattr(gateway_cli, "_names_postgres", lambda url: True)
    return done


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one", "workers"])
def test_a_port_taken_is_one_line_before_the_database_or_kafka(
    asked: list[str],
    taken_port: int,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    workers: list[str],
):
    caplog.set_level(logging.INFO)

    result = CliRunner().invoke(app, ["gateway", "--port", str(taken_port), *workers])

    # A PipelineError: one line and exit code 2 at the entry point (pipeline.cli.main).
    assert isinstance(result.exception, PipelineError), result.exception
    assert (
        str(result.exception) == f"cannot listen on 127.0.0.1:{taken_port}: address already in use"
    )
    assert asked == []  # neither Kafka asked, nor a client built, nor a worker started
    assert not (tmp_path / "gateway.db").exists()  # nothing migrated: no new database
    assert "database:" not in result.stderr
    assert not [r for r in caplog.records if "gateway is open" in r.getMessage()]


def test_a_free_port_goes_on_to_kafka_and_serving(
    asked: list[str], monkeypatch: pytest.MonkeyPatch
):
    # The check lets go of the port: the gateway goes on as before.
    monkeypatch.setattr(gateway_cli, "_serve", lambda *args, **kwargs: asked.append("served"))
    with socket.create_server(("127.0.0.1", 0)) as probe:
        free = int(probe.getsockname()[1])

    result = CliRunner().invoke(app, ["gateway", "--port", str(free)])

    assert result.exit_code == 0, result.output
    assert asked == ["kafka", "served"]
