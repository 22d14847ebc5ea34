"""A processor sent SIGTERM while its Kafka is away exits by itself, and says what it met once,
not once per retry.

Before: aiokafka's fetcher re-raised the cancellation of a fetch waiting out its back-off while
the consumer stopped, Faust's consumer thread died, and the process never exited (still running
60 s later); meanwhile aiokafka logged 700 lines in 35 s.
"""

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter

from confluent_kafka import KafkaException

from pipeline.kafka.clients import build_admin
from pipeline.settings import PipelineSettings
from pipeline.stack.manager import StackManager
from tests.support.stack_cli import PIPELINE, run_pipeline

OUTAGE_S = 8
EXIT_WITHIN_S = 30
GROUP = "orders-service"
HELD_BACK = re.compile(r" \([\d,]+ more like it held back\)$")


def _wait_until_assigned(settings, log, timeout):
    """Until the processor's consumer group is stable with a member holding partitions."""
    admin = build_admin(settings.kafka)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            group = admin.describe_consumer_groups([GROUP])[GROUP].result(10)
        except (KafkaException, TimeoutError):  # coordinator not there yet
            group = None
        if group is not None and any(m.assignment.topic_partitions for m in group.members):
            return
        time.sleep(0.5)
    raise AssertionError(f"not assigned within {timeout} s:\n{log.read_text()[-3000:]}")


def test_a_processor_stopped_while_kafka_is_away_exits(
    pipeline_stack, isolated_stack_env, monkeypatch, tmp_path
):
    for name, value in isolated_stack_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIPELINE_DATABASE__URL", f"sqlite:///{tmp_path / 'orders.db'}")
    settings = PipelineSettings()
    manager = StackManager(settings)
    assert manager.up(only={"kafka"}) == {"kafka"}
    applied = run_pipeline("topics", "apply")
    assert applied.returncode == 0, applied.stderr

    log = tmp_path / "processor.log"
    with log.open("w") as out:
        processor = subprocess.Popen(
            [PIPELINE, "process", "consumers.orders_service:processor"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PIPELINE_LOGS__CONSOLE": "json"},
        )
    try:
        _wait_until_assigned(settings, log, timeout=120)
        stopped = run_pipeline("stack", "down")
        assert stopped.returncode == 0, stopped.stderr
        time.sleep(OUTAGE_S)

        processor.send_signal(signal.SIGTERM)
        returncode = processor.wait(EXIT_WITHIN_S)
    finally:
        if processor.poll() is None:
            processor.kill()
            processor.wait()

    lines = log.read_text(errors="replace").splitlines()
    assert returncode == 0, "\n".join(lines[-40:])
    assert not [line for line in lines if "CancelledError" in line]
    messages = [json.loads(line)["message"] for line in lines if '"logger":"aiokafka' in line]
    kinds = Counter(re.sub(r"\d+", "#", HELD_BACK.sub("", message)) for message in messages)
    # Each kind of aiokafka error once, then once a minute with a count: not once per retry
    # (about 20 lines a second before). The outage and the stop last under two minutes.
    assert kinds, "no aiokafka line at all: was Kafka really away?"
    assert max(kinds.values()) <= 3, kinds.most_common(5)
