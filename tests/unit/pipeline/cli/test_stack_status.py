"""``pipeline stack status``'s table: the "started by us" column names a process of ours only
for the address it runs at."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.stack import manager as manager_module
from pipeline.stack import processes
from pipeline.stack.health import Health


@pytest.fixture
def our_kafka_on_9092(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """A stack home whose recorded Kafka (this test's own process: it runs) listens on 9092;
    the health checks answer without a network. Returns the recorded pid."""
    pid = os.getpid()
    record = processes.ProcessRecord(
        name="kafka",
        pid=pid,
        create_time=psutil.Process(pid).create_time(),
        version="3.9.1",
        address="127.0.0.1:9092",
        log=str(tmp_path / "kafka.log"),
        start_ticks=processes.start_ticks(pid),
    )
    processes.save_records(tmp_path / "state" / "processes.json", {"kafka": record})
    monkeypatch.setenv("PIPELINE_STACK__HOME", str(tmp_path))
    monkeypatch.setattr(
        manager_module,
        "kafka_health",
        lambda kafka: Health("kafka", kafka.bootstrap_servers, False, "nothing listens there"),
    )
    monkeypatch.setattr(
        manager_module,
        "elasticsearch_health",
        lambda es: Health("elasticsearch", es.url, True, "cluster c is green, 1 node", "8"),
    )
    monkeypatch.setattr(
        manager_module.postgres_node,
        "postgres_health",
        lambda stack: Health("postgres", f"127.0.0.1:{stack.postgres_port}", True, "ok", "16"),
    )
    return pid


def _kafka_row(*env: tuple[str, str]) -> str:
    result = CliRunner().invoke(app, ["stack", "status"], env={"COLUMNS": "250", **dict(env)})
    [row] = [line for line in result.output.splitlines() if line.startswith("│ kafka")]
    return row


def test_our_kafka_at_another_address_is_not_shown_as_the_process_there(
    clean_pipeline_environment: None, our_kafka_on_9092: int
) -> None:
    # "kafka │ 127.0.0.1:18899 │ down │ - │ pid 22148 │ nothing listens there": 22148 was the
    # stack's broker on 9092, read as a live process at 18899 that did not answer.
    row = _kafka_row(("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:18899"))

    assert "127.0.0.1:18899" in row
    assert f"pid {our_kafka_on_9092}" not in row
    assert "no (ours runs at 127.0.0.1:9092)" in row


def test_our_kafka_at_the_configured_address_is_shown_with_its_pid(
    clean_pipeline_environment: None, our_kafka_on_9092: int
) -> None:
    row = _kafka_row(("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "localhost:9092"))

    assert f"pid {our_kafka_on_9092}" in row
