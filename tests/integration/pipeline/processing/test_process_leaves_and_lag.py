"""`pipeline process` leaves no Faust data folder behind, its lag counts like Kafka's tools, and
it reads committed messages only (an aborted transaction's events never reach a handler).

Each test runs the effects processor (tests/support/effects_processor.py) in a subprocess whose
current directory is a fresh temporary one.
"""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from pipeline.envelope import encode
from pipeline.kafka.clients import build_producer
from pipeline.ports import free_port
from pipeline.settings import PipelineSettings
from tests.support.effects_processor import effects_metadata
from tests.support.processor_runs import (
    SPEC,
    effect_event,
    effect_rows,
    effects_count,
    effects_env,
    produce,
    wait_until,
)
from tests.support.stack_cli import PIPELINE

EVENTS = 5


class Run:
    """One `pipeline process` subprocess, run from ``cwd``, serving metrics on ``port``."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path, port: int) -> None:
        self.port = port
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [PIPELINE, "process", SPEC, "--metrics-port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
            )

    def samples(self, name: str) -> list[float]:
        """Every sample of the metric ``name`` (none before the server answers)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return []
        return [
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        ]

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            return self.popen.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=30)
            raise AssertionError(f"the processor did not stop:\n{self.log.read_text()}") from None


def transactional_producer(settings: PipelineSettings, transactional_id: str) -> Producer:
    producer = build_producer(settings.kafka, **{"transactional.id": transactional_id})
    producer.init_transactions(30)
    return producer


def in_transaction(producer: Producer, topic: str, key: str, end: Callable[[float], None]) -> None:
    """EVENTS effect events of ``key`` in one transaction, flushed, then ended by ``end``
    (the producer's commit_transaction or abort_transaction)."""
    producer.begin_transaction()
    for seq in range(EVENTS):
        message = encode(effect_event(key, seq))
        producer.produce(topic, key=message.key, value=message.value, headers=message.headers)
    producer.flush(30)
    end(30)


@pytest.fixture
def start_run(
    new_topic: Callable[..., str],
    consumer_group: str,
    tmp_path: Path,
) -> Iterator[Callable[[], tuple[Run, str, str]]]:
    """Start a processor on a new topic from an empty directory: (run, topic, database url)."""
    runs: list[Run] = []

    def start() -> tuple[Run, str, str]:
        topic = new_topic(partitions=1)
        new_topic(name=f"{topic}.dlq", partitions=1)
        database = f"sqlite:///{tmp_path / 'service.db'}"
        effects_metadata.create_all(create_engine(database))
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        env = effects_env(topic=topic, group=consumer_group, database_url=database)
        run = Run(env, cwd, tmp_path / "processor.log", free_port())
        runs.append(run)
        return run, topic, database

    yield start
    for run in runs:
        if run.popen.poll() is None:
            run.popen.kill()
            run.popen.wait(timeout=30)


def test_no_faust_data_folder_is_left_in_the_current_directory(
    start_run: Callable[[], tuple[Run, str, str]],
    pipeline_settings: PipelineSettings,
    tmp_path: Path,
):
    run, topic, database = start_run()
    produce(pipeline_settings, topic, [effect_event("k", 0)])
    engine = create_engine(database)
    # One event handled: the worker has started (Faust makes its data folder on start).
    wait_until(lambda: effects_count(engine) == 1, timeout_s=120, what="the event's effect")
    assert run.stop() == 0, run.log.read_text()

    assert sorted(path.name for path in (tmp_path / "cwd").iterdir()) == []


def test_the_lag_gauge_reaches_zero_after_a_transactional_write(
    start_run: Callable[[], tuple[Run, str, str]],
    pipeline_settings: PipelineSettings,
    unique_name: Callable[[str], str],
):
    run, topic, database = start_run()
    # As `pipeline dlq redrive` writes: in a transaction, whose commit marker takes an offset
    # of its own after the last event.
    producer = transactional_producer(pipeline_settings, unique_name("tx"))
    in_transaction(producer, topic, "k", producer.commit_transaction)
    engine = create_engine(database)
    wait_until(lambda: effects_count(engine) == EVENTS, timeout_s=120, what="every effect")

    # The events are all handled; only the marker is past them: the lag is 0, not 1.
    wait_until(
        lambda: run.samples("pipeline_consumer_lag") == [0.0],
        timeout_s=60,
        what="the one partition's pipeline_consumer_lag to be 0",
    )
    assert run.stop() == 0, run.log.read_text()


def test_events_of_an_aborted_transaction_never_reach_a_handler(
    start_run: Callable[[], tuple[Run, str, str]],
    pipeline_settings: PipelineSettings,
    unique_name: Callable[[str], str],
):
    run, topic, database = start_run()
    producer = transactional_producer(pipeline_settings, unique_name("tx"))
    # The aborted events are in the log (flushed before the abort), before the kept ones.
    in_transaction(producer, topic, "aborted", producer.abort_transaction)
    in_transaction(producer, topic, "kept", producer.commit_transaction)
    engine = create_engine(database)
    wait_until(lambda: effects_count(engine) >= EVENTS, timeout_s=120, what="the kept effects")
    # Read to the end of the partition, then stopped (SIGTERM finishes what is in flight).
    wait_until(
        lambda: run.samples("pipeline_consumer_lag") == [0.0],
        timeout_s=60,
        what="the processor to read to the end of the partition",
    )
    assert run.stop() == 0, run.log.read_text()

    assert [(row[1], row[2]) for row in effect_rows(engine)] == [
        ("kept", seq) for seq in range(EVENTS)
    ]


def test_a_new_group_told_to_start_at_the_latest_skips_what_was_written_before(
    new_topic: Callable[..., str],
    consumer_group: str,
    pipeline_settings: PipelineSettings,
    tmp_path: Path,
):
    # A second saga orchestrator on the shared saga topics read every reply kept first (and
    # dead-lettered 355,000 of other sagas): PIPELINE_PROCESSING__START=latest (--start).
    topic = new_topic(partitions=1)
    new_topic(name=f"{topic}.dlq", partitions=1)
    database = f"sqlite:///{tmp_path / 'service.db'}"
    engine = create_engine(database)
    effects_metadata.create_all(engine)
    produce(pipeline_settings, topic, [effect_event("old", 0), effect_event("old", 1)])
    env = effects_env(
        topic=topic,
        group=consumer_group,
        database_url=database,
        PIPELINE_PROCESSING__START="latest",
    )
    run = Run(env, tmp_path, tmp_path / "processor.log", free_port())
    try:
        # Assigned, at the end of the partition (its lag series is there before any record).
        wait_until(
            lambda: run.samples("pipeline_consumer_lag") == [0.0],
            timeout_s=120,
            what="the processor to be assigned the partition, at its end",
        )
        produce(pipeline_settings, topic, [effect_event("new", 0)])
        wait_until(lambda: effects_count(engine) >= 1, timeout_s=60, what="the new event's effect")
    finally:
        assert run.stop() == 0, run.log.read_text()

    assert [row[1] for row in effect_rows(engine)] == ["new"]
