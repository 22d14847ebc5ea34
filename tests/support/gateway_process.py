"""`pipeline gateway` as a subprocess of a test: its output in a file, its port, its requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from pipeline.kafka.clients import build_consumer
from pipeline.kafka.watermarks import read_watermarks
from pipeline.ports import free_port
from pipeline.settings import PipelineSettings
from tests.support.processor_runs import wait_until
from tests.support.stack_cli import PIPELINE


def order(order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "customer-9",
        "lines": [{"sku": "sku-1", "quantity": 2, "unit_price": "12.50"}],
    }


class GatewayProcess:
    """``pipeline gateway [args]`` on a free port with ``env`` on top of ours; waits until
    ``listening`` workers listen."""

    def __init__(
        self, log: Path, env: dict[str, str], *args: str, listening: int = 1, port: int = 0
    ) -> None:
        self.port = port or free_port()
        self.log = log
        environment = {
            **os.environ,
            "PIPELINE_LOGS__CONSOLE": "text",
            "PIPELINE_GATEWAY__PORT": str(self.port),
            **env,
        }
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [PIPELINE, "gateway", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        wait_until(
            lambda: (
                self.output().count("gateway listening") >= listening
                or self.popen.poll() is not None
            ),
            timeout_s=60,
            what="the gateway to listen",
        )
        assert self.popen.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def post(
        self, request_type: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """POST a request: status, headers and JSON answer."""
        request = urllib.request.Request(
            self.url(f"/v1/requests/{request_type}"),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, dict(answer.headers), json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())

    def stop(self) -> int:
        """SIGTERM, then its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=60)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=30)


def high_watermarks(settings: PipelineSettings, topic: str) -> dict[int, int]:
    consumer = build_consumer(settings.kafka, "gateway-test-watermarks")
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        # read_watermarks waits out a partition without a leader for a moment (seen in CI
        # after the chaos tests restarted the broker: NOT_LEADER_FOR_PARTITION).
        return {p: read_watermarks(consumer, topic, p, timeout_s=30)[1] for p in partitions}
    finally:
        consumer.close()


def messages_since(
    settings: PipelineSettings, topic: str, start: dict[int, int]
) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """Every message of ``topic`` from the offsets ``start`` up to its current end: key,
    value and headers."""
    end = high_watermarks(settings, topic)
    left = {p: end[p] for p in end if end[p] > start.get(p, 0)}
    found: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
    if not left:
        return found
    consumer = build_consumer(
        settings.kafka, "gateway-test-reader", **{"enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in left])
        deadline = time.monotonic() + 60  # a fresh consumer's first fetch can be slow
        while left:
            message = consumer.poll(1)
            if message is None:
                assert time.monotonic() < deadline, f"no more messages though {left} are not read"
                continue
            if message.error():
                continue
            found.append((message.key(), message.value(), list(message.headers() or [])))
            if message.offset() + 1 >= left.get(message.partition(), 0):
                left.pop(message.partition(), None)
    finally:
        consumer.close()
    return found
