"""The broker is killed (SIGKILL) in the middle of `pipeline produce` and restarted seconds later.

The idempotent producer retries what was in flight: afterwards the topic holds every line once,
in order per key, and the summary reports the retries.
"""

import json
import os
import re
import signal
import subprocess
import time
from collections import defaultdict

import psutil
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from pipeline.kafka.clients import build_admin, build_consumer
from pipeline.settings import PipelineSettings
from pipeline.stack.manager import StackManager
from tests.support.stack_cli import PIPELINE

EVENTS = 150_000
KEYS = 500
OUTAGE_S = 4


def _end_offsets(consumer, topic):
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return sum(
        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
    )


def test_a_broker_killed_mid_produce_loses_and_duplicates_nothing(
    pipeline_stack, isolated_stack_env, monkeypatch, tmp_path
):
    for name, value in isolated_stack_env.items():
        monkeypatch.setenv(name, value)
    settings = PipelineSettings()
    manager = StackManager(settings)
    assert manager.up(only={"kafka"}) == {"kafka"}
    topic = "chaos.outage"
    admin = build_admin(settings.kafka)
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)

    source = tmp_path / "events.ndjson"
    with source.open("w") as lines:
        for n in range(EVENTS):
            lines.write(json.dumps({"key": f"k{n % KEYS}", "n": n}) + "\n")

    env = {**os.environ, "COLUMNS": "200"}
    report = tmp_path / "produce.stderr"
    producing = subprocess.Popen(
        [PIPELINE, "produce", topic, str(source), "--key", "key"],
        stdout=subprocess.DEVNULL,
        stderr=report.open("w"),
        env=env,
    )
    watcher = build_consumer(settings.kafka, "chaos-watch")
    deadline = time.monotonic() + 120
    while _end_offsets(watcher, topic) < EVENTS // 10:
        assert producing.poll() is None, "the produce run ended before the outage"
        assert time.monotonic() < deadline, "the produce run did not get going"
        time.sleep(0.05)
    watcher.close()

    broker = psutil.Process(manager.status().records["kafka"].pid)
    broker.send_signal(signal.SIGKILL)
    broker.wait(30)
    time.sleep(OUTAGE_S)
    assert producing.poll() is None, "the produce run gave up during the outage"
    assert manager.up(only={"kafka"}) == {"kafka"}

    producing.wait(timeout=300)
    summary = report.read_text()
    assert producing.returncode == 0, summary[-2000:]
    # The summary says what was re-sent (how many depends on what was in flight at the kill).
    resent = re.search(r"retried \(events sent again\)\D*([\d,]+)", summary)
    assert resent is not None, summary[-2000:]
    print(f"events sent again after the outage: {resent.group(1)}")

    consumer = build_consumer(settings.kafka, "chaos-verify")
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    written = _end_offsets(consumer, topic)  # every message in the log, duplicates included
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen = defaultdict(list)
    count = 0
    deadline = time.monotonic() + 120  # a consumer right after the restart may wait for leaders
    while count < written and time.monotonic() < deadline:
        batch = [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        for message in batch:
            data = json.loads(message.value())
            seen[data["key"]].append(data["n"])
            count += 1
    consumer.close()

    numbers = [n for sequence in seen.values() for n in sequence]
    assert count == EVENTS, f"{count - EVENTS:+d} messages against what was produced"
    assert len(set(numbers)) == EVENTS  # nothing lost, nothing twice
    for key, sequence in seen.items():
        assert sequence == sorted(sequence), f"order broken for {key}"
