"""``StackManager.status``: a process of ours is the one a row is about only when it runs at
the address the row checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import KafkaSettings, PipelineSettings, StackSettings
from pipeline.stack import manager as manager_module
from pipeline.stack.health import Health
from pipeline.stack.manager import StackManager
from pipeline.stack.processes import ProcessRecord
from pipeline.stack.status import runs_at


def _record(name: str, address: str) -> ProcessRecord:
    return ProcessRecord(name, 22148, 0.0, "3.9.1", address, f"/tmp/{name}.log")


@pytest.mark.parametrize(
    ("address", "here"),
    [
        ("127.0.0.1:9092", True),
        ("localhost:9092", True),
        ("127.0.0.1:18899", False),
        ("10.0.0.5:9092", False),
    ],
)
def test_a_record_runs_at_its_own_host_and_port_only(address: str, here: bool) -> None:
    assert runs_at(_record("kafka", "127.0.0.1:9092"), address) is here


def _manager(tmp_path: Path, bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> StackManager:
    settings = PipelineSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap), stack=StackSettings(home=tmp_path)
    )
    manager = StackManager(settings)
    records = {
        "kafka": _record("kafka", "127.0.0.1:9092"),
        "postgres": _record("postgres", "127.0.0.1:5432"),
    }
    monkeypatch.setattr(manager, "running", lambda: records)
    monkeypatch.setattr(
        manager_module,
        "kafka_health",
        lambda kafka: Health("kafka", kafka.bootstrap_servers, ok=True, detail="cluster x"),
    )
    monkeypatch.setattr(
        manager_module,
        "elasticsearch_health",
        lambda es: Health("elasticsearch", es.url, ok=False, detail="nothing listens there"),
    )
    monkeypatch.setattr(
        manager_module.postgres_node,
        "postgres_health",
        lambda stack: Health("postgres", "127.0.0.1:5432", ok=True, detail="PostgreSQL 16"),
    )
    return manager


def test_our_kafka_elsewhere_is_not_the_process_at_the_configured_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PIPELINE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:18899 showed "pid 22148", the stack's broker
    # on 9092, beside 18899's row, as if it were a live process there that did not answer.
    status = _manager(tmp_path, "127.0.0.1:18899", monkeypatch).status()

    assert status.started_here("kafka") is None
    assert status.kafka.version is None  # our broker's release is not that Kafka's
    assert status.records["kafka"].pid == 22148  # still known (down stops it)
    here = status.started_here("postgres")
    assert here is not None and here.pid == 22148


def test_our_kafka_at_the_configured_address_is_the_process_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = _manager(tmp_path, "127.0.0.1:9092", monkeypatch).status()

    here = status.started_here("kafka")
    assert here is not None and here.pid == 22148
    assert status.kafka.version == "3.9.1"
