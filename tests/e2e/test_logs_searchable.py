"""Logs of a running program are searchable in Elasticsearch, with their correlation ids."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

from tests.support.logs import log_alias
from tests.support.stack_cli import PIPELINE, run_pipeline

PROGRAM = os.path.join(os.path.dirname(__file__), "..", "support", "log_program.py")


def test_a_programs_log_lines_are_found_by_correlation_id_within_seconds(
    pipeline_stack, elasticsearch_client, new_topic, consumer_group, tmp_path
):
    topic = new_topic(3)
    correlation_id = f"req-{uuid.uuid4().hex[:8]}"
    with log_alias(elasticsearch_client) as alias:
        env = {
            **os.environ,
            "PIPELINE_LOGS__TOPIC": topic,
            "PIPELINE_LOGS__DLQ_TOPIC": new_topic(1),
            "PIPELINE_LOGS__INDEX_ALIAS": alias,
            "PIPELINE_LOGS__SHIPPER_BATCH_TIMEOUT_S": "0.2",
        }
        shipper_log = tmp_path / "shipper.log"
        shipper = subprocess.Popen(
            [PIPELINE, "logs", "ship", "--group", consumer_group],
            stdout=subprocess.DEVNULL,
            stderr=shipper_log.open("w"),
            env=env,
        )
        try:
            program = subprocess.run(
                [sys.executable, PROGRAM, "e2e-orders", correlation_id, "20"],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert program.returncode == 0, program.stderr[-2000:]
            # a wait with a deadline, not a timed assertion: "within seconds" is the claim
            deadline = time.monotonic() + 60
            found = []
            while time.monotonic() < deadline:
                result = run_pipeline(
                    "logs", "search", "--correlation-id", correlation_id, "-o", "ndjson",
                    "--limit", "100", env={"PIPELINE_LOGS__INDEX_ALIAS": alias},
                )  # fmt: skip
                found = [json.loads(line) for line in result.stdout.splitlines()]
                if len(found) == 20:
                    break
                time.sleep(1)
            assert len(found) == 20, shipper_log.read_text()[-2000:]
            assert [doc["labels"]["n"] for doc in found] == [str(n) for n in range(20)]
            for doc in found:
                assert doc["service"]["name"] == "e2e-orders"
                assert doc["pipeline"]["correlation_id"] == correlation_id
                assert doc["pipeline"]["topic"] == "orders"
                assert doc["pipeline"]["event_id"]
            assert len({doc["event"]["id"] for doc in found}) == 20
        finally:
            shipper.send_signal(signal.SIGTERM)
            shipper.wait(60)
        assert shipper.returncode == 0, shipper_log.read_text()[-2000:]
