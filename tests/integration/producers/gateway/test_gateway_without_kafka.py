"""`pipeline gateway` with Kafka away: /healthz says so, and Ctrl-C says what it waits for.

The gateway runs as a subprocess whose Kafka address is a closed port (no stack needed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.ports import free_ports
from tests.support.processor_runs import wait_until
from tests.support.stack_cli import PIPELINE

ORDER = {
    "order_id": "order-1",
    "customer_id": "customer-9",
    "lines": [{"sku": "sku-1", "quantity": 2, "unit_price": "12.50"}],
}


class Gateway:
    def __init__(self, tmp_path: Path) -> None:
        self.port, self.kafka_port = free_ports(2)  # nothing listens on the second
        self.log = tmp_path / "gateway.log"
        env = {
            **os.environ,
            "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{self.kafka_port}",
            "PIPELINE_GATEWAY__PORT": str(self.port),
            "PIPELINE_LOGS__CONSOLE": "text",
        }
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [PIPELINE, "gateway"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_until(
            lambda: "gateway listening" in self.output() or self.popen.poll() is not None,
            timeout_s=60,
            what="the gateway to listen",
        )
        assert self.popen.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    started = Gateway(tmp_path)
    yield started
    if started.popen.poll() is None:
        started.popen.kill()
        started.popen.wait(timeout=30)


def test_healthz_is_503_with_a_one_line_reason_while_kafka_is_away(gateway: Gateway):
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(gateway.url("/healthz"), timeout=30)

    assert answer.value.code == 503
    body = json.loads(answer.value.read())
    assert body["status"] == "unavailable"
    assert body["reason"].startswith(f"Kafka at 127.0.0.1:{gateway.kafka_port} does not answer (")
    assert "\n" not in body["reason"]


def _order_request(gateway: Gateway) -> urllib.request.Request:
    return urllib.request.Request(
        gateway.url("/v1/requests/place_order"),
        data=json.dumps(ORDER).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )


def test_ctrl_c_says_what_it_waits_for_and_a_second_stops_at_once(gateway: Gateway):
    answers: list[tuple[int, dict[str, object]] | BaseException] = []

    def place_order_and_wait() -> None:
        try:
            urllib.request.urlopen(_order_request(gateway), timeout=60)
        except urllib.error.HTTPError as error:
            answers.append((error.code, json.loads(error.read())))
        except Exception as error:  # reported by the assertion below
            answers.append(error)

    waiting = threading.Thread(target=place_order_and_wait)
    waiting.start()
    # The gateway holds each request until Kafka acknowledges (it never will); this client
    # gives up after a second, by which time the request above is in flight too.
    with pytest.raises(TimeoutError):
        urllib.request.urlopen(_order_request(gateway), timeout=1)

    gateway.popen.send_signal(signal.SIGINT)
    wait_until(
        lambda: "stopping:" in gateway.output(), timeout_s=30, what="the first Ctrl-C's message"
    )
    gateway.popen.send_signal(signal.SIGINT)
    code = gateway.popen.wait(timeout=30)
    waiting.join(timeout=30)

    output = gateway.output()
    assert code == 130, output
    assert (
        "stopping: waiting up to 30 s for requests in flight and 2 messages to be delivered "
        "to Kafka (Ctrl-C again to stop at once)"
    ) in output
    assert (
        "stopped at once: 2 messages were given up (not known to be delivered to Kafka)"
    ) in output
    # The request still waiting was answered: not acknowledged, its message given up.
    assert len(answers) == 1 and isinstance(answers[0], tuple), answers
    [(status, body)] = answers
    error = body["error"]
    assert isinstance(error, dict), body
    assert status == 503 and error["code"] == "not_acknowledged", body
    assert "Purged" in error["message"], body
    # The stop ended in order: no traceback (the app's cleanup cut short had left its async
    # generators for asyncio to close at exit, "generator didn't stop after athrow()").
    assert "Traceback" not in output and "athrow" not in output, output


def test_a_signal_after_the_stop_leaves_its_exit_code(gateway: Gateway):
    gateway.popen.send_signal(signal.SIGTERM)
    wait_until(
        lambda: (
            "gateway stopped: every message was delivered to Kafka" in gateway.output()
            or gateway.popen.poll() is not None
        ),
        timeout_s=30,
        what="the gateway to stop",
    )
    # While it winds down (its Kafka health check, against a closed port, still waits), a
    # second SIGTERM changes nothing: it had ended the process with 143.
    gateway.popen.send_signal(signal.SIGTERM)
    code = gateway.popen.wait(timeout=30)

    output = gateway.output()
    assert code == 0, output
    assert "Traceback" not in output, output
