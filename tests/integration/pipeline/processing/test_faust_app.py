"""`pipeline process` on SQLite: every event handled once, metrics served, the inbox cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from pipeline.envelope import Event, encode
from pipeline.ports import free_port
from pipeline.processing.inbox import inbox_table
from tests.support.effects_processor import effects, effects_metadata
from tests.support.stack_cli import PIPELINE

EVENTS = 300
KEYS = 30
REPO = Path(__file__).resolve().parents[4]


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def _wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not true after {timeout_s:.0f} s")
        time.sleep(0.5)


@pytest.fixture
def processor_run(
    new_topic: Callable[..., str], unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[tuple[str, int, str, subprocess.Popen[bytes]]]:
    topic = new_topic(partitions=3)
    new_topic(name=f"{topic}.dlq", partitions=1)
    database = f"sqlite:///{tmp_path / 'service.db'}"
    effects_metadata.create_all(create_engine(database))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "EFFECTS_TOPIC": topic,
        "EFFECTS_GROUP": unique_name("effects"),
        "PIPELINE_DATABASE__URL": database,
        "PIPELINE_LOGS__CONSOLE": "text",
        "PIPELINE_PROCESSING__INBOX_RETENTION_S": "1",
        "PIPELINE_PROCESSING__INBOX_CLEANUP_INTERVAL_S": "1",
        "PIPELINE_PROCESSING__METRICS_LOG_INTERVAL_S": "1",
    }
    log = (tmp_path / "processor.log").open("wb")
    child = subprocess.Popen(
        [
            PIPELINE,
            "process",
            "tests.support.effects_processor:processor",
            "--metrics-port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        yield topic, port, database, child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
        log.close()


def test_processor_handles_each_event_once_serves_metrics_and_cleans_its_inbox(
    processor_run: tuple[str, int, str, subprocess.Popen[bytes]],
    pipeline_settings: object,
) -> None:
    topic, port, database, child = processor_run
    producer = Producer({"bootstrap.servers": "127.0.0.1:9092", "enable.idempotence": True})
    for n in range(EVENTS):
        message = encode(
            Event(
                source="/test", type="Effect", partitionkey=f"k{n % KEYS}", data={"seq": n // KEYS}
            )
        )
        producer.produce(topic, key=message.key, value=message.value, headers=message.headers)
    assert producer.flush(30) == 0

    def processed() -> float:
        if child.poll() is not None:
            pytest.fail(f"the processor exited with {child.returncode}")
        try:
            return _metrics(port).get("pipeline_events_processed_total", 0.0)
        except OSError:
            return 0.0

    _wait_for("all events processed", lambda: processed() >= EVENTS)
    metrics = _metrics(port)
    assert metrics["pipeline_events_processed_total"] == EVENTS
    assert metrics.get("pipeline_events_dead_lettered_total", 0.0) == 0
    # Lag is measured on the metrics timer (every second here): caught up, it reads 0.
    _wait_for(
        "lag reported as 0",
        lambda: _metrics(port).get("pipeline_consumer_lag", -1.0) == 0.0,
        timeout_s=30,
    )

    engine = create_engine(database)

    def inbox_rows() -> int:
        with engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(inbox_table)).scalar_one()
            )

    # Retention is 1 s and the cleanup runs every second: the inbox empties by itself.
    _wait_for("inbox cleaned up", lambda: inbox_rows() == 0, timeout_s=60)
    with engine.connect() as connection:
        rows = connection.execute(select(effects.c.key, effects.c.seq).order_by(effects.c.id)).all()
    assert len(rows) == EVENTS
    per_key: dict[str, list[int]] = {}
    for key, seq in rows:
        per_key.setdefault(key, []).append(seq)
    assert all(seqs == list(range(EVENTS // KEYS)) for seqs in per_key.values())


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_processor_stopped_mid_stream_exits_0(
    processor_run: tuple[str, int, str, subprocess.Popen[bytes]],
    pipeline_settings: object,
    stop: signal.Signals,
) -> None:
    topic, port, _, child = processor_run
    producer = Producer({"bootstrap.servers": "127.0.0.1:9092", "enable.idempotence": True})
    for n in range(EVENTS):
        message = encode(
            Event(
                source="/test", type="Effect", partitionkey=f"k{n % KEYS}", data={"seq": n // KEYS}
            )
        )
        producer.produce(topic, key=message.key, value=message.value, headers=message.headers)
    assert producer.flush(30) == 0

    def processing() -> bool:
        if child.poll() is not None:
            pytest.fail(f"the processor exited with {child.returncode}")
        try:
            return _metrics(port).get("pipeline_events_processed_total", 0.0) > 0
        except OSError:
            return False

    _wait_for("the first events processed", processing)
    child.send_signal(stop)

    assert child.wait(60) == 0
