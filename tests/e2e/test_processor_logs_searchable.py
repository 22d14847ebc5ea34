"""A running processor's log lines reach Elasticsearch with the ids of the events they handled.

`pipeline process` logs through the Kafka log handler; its handler's lines carry the handled
event's id, correlation id, topic and consumer group from the runtime's log context;
`pipeline logs ship` indexes them, and `pipeline logs search --correlation-id` finds them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from sqlalchemy import create_engine

from pipeline.envelope import Event, encode
from tests.support.effects_processor import effects_metadata
from tests.support.logs import log_alias
from tests.support.stack_cli import PIPELINE, run_pipeline

REPO = Path(__file__).resolve().parents[2]
EVENTS = 12


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def test_a_processors_log_lines_are_found_by_the_correlation_id_of_the_event_it_handled(
    pipeline_stack, elasticsearch_client, new_topic, unique_name, tmp_path
):
    topic = new_topic(partitions=3)
    new_topic(name=f"{topic}.dlq", partitions=1)
    logs_topic = new_topic(partitions=1)
    group = unique_name("effects")
    database = f"sqlite:///{tmp_path / 'service.db'}"
    effects_metadata.create_all(create_engine(database))
    correlation_id = f"req-{uuid.uuid4().hex[:12]}"
    events = [
        Event(
            source="/test",
            type="Effect",
            partitionkey=f"k{n % 3}",
            correlationid=correlation_id,
            data={"seq": n // 3},
        )
        for n in range(EVENTS)
    ]
    producer = Producer({"bootstrap.servers": "127.0.0.1:9092", "enable.idempotence": True})
    for event in events:
        message = encode(event)
        producer.produce(topic, key=message.key, value=message.value, headers=message.headers)
    assert producer.flush(30) == 0

    with log_alias(elasticsearch_client) as alias:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "EFFECTS_TOPIC": topic,
            "EFFECTS_GROUP": group,
            "PIPELINE_DATABASE__URL": database,
            "PIPELINE_LOGS__TOPIC": logs_topic,
            "PIPELINE_LOGS__DLQ_TOPIC": new_topic(partitions=1),
            "PIPELINE_LOGS__INDEX_ALIAS": alias,
            "PIPELINE_LOGS__SHIPPER_BATCH_TIMEOUT_S": "0.2",
        }
        children = [
            subprocess.Popen(
                [PIPELINE, "logs", "ship", "--group", unique_name("shipper")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / "shipper.log").open("wb"),
            ),
            subprocess.Popen(
                [PIPELINE, "process", "tests.support.effects_processor:processor"],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / "processor.log").open("wb"),
            ),
        ]
        try:
            # A wait with a deadline, not a timed assertion: "within seconds" is the claim.
            deadline = time.monotonic() + 90
            found: list[dict] = []
            while time.monotonic() < deadline:
                result = run_pipeline(
                    "logs", "search", 'log.logger:"tests.effects"',
                    "--correlation-id", correlation_id, "-o", "ndjson", "--limit", "100",
                    env={"PIPELINE_LOGS__INDEX_ALIAS": alias},
                )  # fmt: skip
                found = [json.loads(line) for line in result.stdout.splitlines() if line]
                if len(found) >= EVENTS:
                    break
                time.sleep(1)
            processor_log = (tmp_path / "processor.log").read_text(errors="replace")[-2000:]
            assert len(found) == EVENTS, processor_log
        finally:
            for child in reversed(children):
                _stop(child)

    by_event = {doc["pipeline"]["event_id"]: doc for doc in found}
    assert set(by_event) == {event.id for event in events}
    for event in events:
        doc = by_event[event.id]
        assert doc["service"]["name"] == group
        assert doc["log"]["logger"] == "tests.effects"
        assert doc["pipeline"]["correlation_id"] == correlation_id
        assert doc["pipeline"]["topic"] == topic
        assert doc["pipeline"]["consumer_group"] == group
        assert doc["pipeline"]["event_type"] == "Effect"
        assert doc["message"] == f"effect {event.data['seq']} of {event.partitionkey} applied"
