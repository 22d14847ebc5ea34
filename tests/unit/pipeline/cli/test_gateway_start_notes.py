"""``pipeline gateway --workers N`` says each of the gateway's start-up notes once, as one
gateway does: the database (the supervisor) and that no API key exists (the first worker, the
one the supervisor gives ``--announce``), not once more per worker.

Each gateway starts here in this process, on a SQLite database of its own, with its edges
replaced: Kafka (an admin client that lists every topic, a producer that sends nothing), the
HTTP server (the app is started and stopped, no socket), and, for ``--workers``, the
processes (each worker's command line is run here in turn, as the supervisor would start it).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from pipeline.cli import gateway as gateway_cli
from pipeline.cli.main import app

OPEN_WARNING = "no API key exists: the gateway is open"


class FakeAdmin:
    """A Kafka that answers and has every topic."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        partitions = {0: SimpleNamespace(replicas=[1])}
        return SimpleNamespace(
            topics={
                name: SimpleNamespace(partitions=partitions)
                for name in gateway_cli.request_topics()
            }
        )

    def take_security_failure(self) -> None:
        return None


class FakeProducer:
    """What the app uses of the producer while it starts and stops."""

    @asynccontextmanager
    async def serving_on_loop(self) -> AsyncIterator[None]:
        yield


async def start_and_stop(gateway: web.Application, *args: Any, **kwargs: Any) -> None:
    """``serve`` without a socket: the app's start (its key read among it), then its stop."""
    runner = web.AppRunner(gateway)
    await runner.setup()
    await runner.cleanup()


@pytest.fixture(autouse=True)
def signals_put_back() -> Iterator[None]:
    """The gateway's end ignores SIGINT and SIGTERM until its process ends (a stop is final):
    here, in pytest's process, they are put back after each test."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def gateway_edges(
    clean_pipeline_environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> list[list[str]]:
    """The gateway's edges replaced (see the module's docstring); the workers' command lines,
    as ``pipeline gateway --workers`` starts them, in order."""
    monkeypatch.setenv("PIPELINE_DATABASE__URL", f"sqlite:///{tmp_path / 'gateway.db'}")
    monkeypatch.setattr("pipeline.logs.configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(gateway_cli, "_check_kafka", lambda settings: None)
    monkeypatch.setattr("pipeline.kafka.clients.build_admin", lambda kafka: FakeAdmin())
    monkeypatch.setattr(
        "pipeline.kafka.producer.build_event_producer", lambda *args: FakeProducer()
    )
    monkeypatch.setattr("producers.gateway.serve", start_and_stop)
    # The port check binds the port (test_gateway_port_taken.py): no socket here either.
    monkeypatch.setattr("producers.gateway.workers.check_address", lambda host, port: None)
    # The workers' shared store is PostgreSQL's; here they share the SQLite file, memory stores.
    monkeypatch.setattr(gateway_cli, "_names_postgres", lambda url: True)
    started: list[list[str]] = []

    def run_workers(
        argv: Sequence[str],
        count: int,
        *,
        address: tuple[str, int] | None = None,
        say: Callable[[str], None] = print,
        first_args: Sequence[str] = (),
    ) -> int:
        command = list(argv[argv.index("gateway") :])  # after `python -c <program>`
        for number in range(count):
            args = [*command, *(first_args if number == 0 else ())]
            started.append(args)
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
            print(result.stderr, end="", file=sys.stderr)
        return 0

    monkeypatch.setattr("producers.gateway.workers.run_workers", run_workers)
    return started


def _notes(stderr: str, records: list[logging.LogRecord]) -> tuple[int, int]:
    """How many times the database and the open gateway were said."""
    databases = sum(line.startswith("database: ") for line in stderr.splitlines())
    warnings = [r for r in records if r.levelno == logging.WARNING]
    return databases, sum(OPEN_WARNING in r.getMessage() for r in warnings)


@pytest.mark.parametrize("workers", [2, 3])
def test_a_gateway_of_several_workers_says_each_start_up_note_once(
    gateway_edges: list[list[str]], caplog: pytest.LogCaptureFixture, workers: int
):
    caplog.set_level(logging.INFO)

    result = CliRunner().invoke(app, ["gateway", "--port", "18303", "--workers", str(workers)])

    assert result.exit_code == 0, result.output
    assert len(gateway_edges) == workers  # every worker started, and the app of each
    assert _notes(result.stderr, caplog.records) == (1, 1)  # were (workers + 1, workers)
    assert ["--announce" in args for args in gateway_edges] == [True] + [False] * (workers - 1)


def test_one_gateway_still_says_its_database_and_that_it_is_open(
    gateway_edges: list[list[str]], caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)

    result = CliRunner().invoke(app, ["gateway", "--port", "18303"])

    assert result.exit_code == 0, result.output
    assert gateway_edges == []
    assert _notes(result.stderr, caplog.records) == (1, 1)
