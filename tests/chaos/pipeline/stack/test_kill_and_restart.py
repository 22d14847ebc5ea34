"""kill -9 of the broker, Elasticsearch and PostgreSQL: status notices, up restarts, nothing is
lost."""

import os
import signal
import time

import psutil
import psycopg
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from pipeline.kafka.clients import build_admin, build_consumer, build_producer
from pipeline.kafka.readback import end_offsets
from pipeline.logs.elasticsearch import build_elasticsearch
from pipeline.settings import PipelineSettings
from pipeline.stack.manager import StackManager
from pipeline.stack.postgres_node import database_url
from tests.support.stack_cli import run_pipeline

EVENTS = 200


def _server_processes(record_pid: int) -> list[psutil.Process]:
    """The JVMs under a recorded process (runuser -> launcher -> server for Elasticsearch)."""
    root = psutil.Process(record_pid)
    return [p for p in [root, *root.children(recursive=True)] if "java" in p.name()]


def _postgres_family(record_pid: int) -> list[psutil.Process]:
    """The postmaster and every backend and worker under it."""
    root = psutil.Process(record_pid)
    return [root, *root.children(recursive=True)]


def _count_messages(settings: PipelineSettings, topic: str) -> int:
    """The messages read from the start of every partition of ``topic`` up to its end.

    The end (high watermark) counts every message the broker holds, duplicates included; one
    it lost is neither counted there nor read.
    """
    consumer = build_consumer(settings.kafka, group_id=f"chaos-count-{os.getpid()}")
    try:
        ends = end_offsets(consumer, topic)
        held = sum(partition.offset for partition in ends)
        consumer.assign([TopicPartition(topic, partition.partition, 0) for partition in ends])
        seen = 0
        deadline = time.monotonic() + 60
        while seen < held and time.monotonic() < deadline:
            batch = consumer.consume(num_messages=500, timeout=1.0)
            seen += sum(1 for message in batch if message.error() is None)
        return seen
    finally:
        consumer.close()


def test_kill_9_of_every_server_is_seen_by_status_and_healed_by_up(
    pipeline_stack, isolated_stack_env, monkeypatch
):
    for name, value in isolated_stack_env.items():
        monkeypatch.setenv(name, value)
    settings = PipelineSettings()
    manager = StackManager(settings)
    assert manager.up() == {"kafka", "elasticsearch", "postgres"}

    topic = "chaos.survivors"
    admin = build_admin(settings.kafka)
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    producer = build_producer(settings.kafka)
    for n in range(EVENTS):
        producer.produce(topic, key=str(n % 7).encode(), value=str(n).encode())
    assert producer.flush(30) == 0
    with build_elasticsearch(settings.elasticsearch) as es:
        es.index(index="chaos-survivors", id="1", document={"kept": True}, refresh=True)
    postgres = database_url(settings.stack, with_password=True).replace("+psycopg", "", 1)
    with psycopg.connect(postgres) as connection:  # commits on leaving the block
        connection.execute("create table survivors (n int primary key)")
        connection.execute("insert into survivors select generate_series(1, %s)", (EVENTS,))

    before = manager.status()
    killed = []
    for name in ("kafka", "elasticsearch"):
        for process in _server_processes(before.records[name].pid):
            process.send_signal(signal.SIGKILL)
            killed.append(process)
    for process in _postgres_family(before.records["postgres"].pid):
        process.send_signal(signal.SIGKILL)
        killed.append(process)
    psutil.wait_procs(killed, timeout=30)

    status = run_pipeline("stack", "status", env=isolated_stack_env)
    assert status.returncode == 1
    assert "down" in status.stdout

    restarted = run_pipeline("stack", "up", env=isolated_stack_env)
    assert restarted.returncode == 0, restarted.stderr
    assert "started elasticsearch, kafka, postgres" in restarted.stderr

    assert _count_messages(settings, topic) == EVENTS
    with build_elasticsearch(settings.elasticsearch) as es:
        assert es.get(index="chaos-survivors", id="1")["_source"] == {"kept": True}
    with psycopg.connect(postgres) as connection:
        assert connection.execute("select count(*) from survivors").fetchone() == (EVENTS,)

    down = run_pipeline("stack", "down", env=isolated_stack_env)
    assert down.returncode == 0
    home = isolated_stack_env["PIPELINE_STACK__HOME"]
    leftovers = [
        p.pid for p in psutil.process_iter(["cmdline"]) if home in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
    assert run_pipeline("stack", "status", env=isolated_stack_env).returncode == 1
