"""Gateway processes sharing the Idempotency-Key store in PostgreSQL, and ``--workers``.

The gateways are real `pipeline gateway` processes over the real Kafka and a PostgreSQL database
of the test's own; they produce to the catalogue topic ``requests.orders``, where the test reads
back, from the offsets before it, only the events of its own order ids.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import pytest

from pipeline.request_types import REQUEST_TYPES
from pipeline.settings import PipelineSettings
from tests.support.gateway_process import GatewayProcess, high_watermarks, messages_since, order
from tests.support.stack_cli import run_pipeline

TOPIC = REQUEST_TYPES["place_order"].topic
KEYS = 100


@pytest.fixture
def database_env(postgres_url: str, catalogue_topics) -> dict[str, str]:
    return {"PIPELINE_DATABASE__URL": postgres_url}


async def _send_each_key_to_both(ports: list[int], prefix: str) -> list[list[tuple[int, str]]]:
    """For each key, one request to each gateway at the same time: (status, event id) pairs."""
    async with aiohttp.ClientSession() as session:

        async def post(port: int, number: int) -> tuple[int, str]:
            async with session.post(
                f"http://127.0.0.1:{port}/v1/requests/place_order",
                json=order(f"{prefix}-{number}"),
                headers={"Idempotency-Key": f"{prefix}-key-{number}"},
            ) as answer:
                body = await answer.json()
                return answer.status, body.get("event_id", json.dumps(body))

        async def both(number: int) -> list[tuple[int, str]]:
            return list(await asyncio.gather(*(post(port, number) for port in ports)))

        answers = []
        for first in range(0, KEYS, 10):  # ten keys at a time: twenty requests in flight
            answers.extend(await asyncio.gather(*(both(n) for n in range(first, first + 10))))
        return answers


def test_one_idempotency_key_sent_to_two_gateway_processes_at_once_produces_one_event(
    tmp_path: Path, database_env: dict[str, str], pipeline_settings: PipelineSettings
):
    prefix = f"replicas-{uuid.uuid4().hex[:8]}"
    start = high_watermarks(pipeline_settings, TOPIC)
    gateways = [GatewayProcess(tmp_path / f"gateway-{n}.log", database_env) for n in (1, 2)]
    try:
        answers = asyncio.run(_send_each_key_to_both([g.port for g in gateways], prefix))
    finally:
        codes = [gateway.stop() for gateway in gateways]
    assert codes == [0, 0], [g.output() for g in gateways]

    for number, pair in enumerate(answers):
        assert [status for status, _ in pair] == [202, 202], (number, pair)
        assert pair[0][1] == pair[1][1], (number, pair)  # both answers name one event
    events: dict[str, list[str]] = {}
    for _key, value, headers in messages_since(pipeline_settings, TOPIC, start):
        data = json.loads(value or b"{}")
        if str(data.get("order_id", "")).startswith(f"{prefix}-"):
            event_id = dict(headers)["ce_id"].decode()
            events.setdefault(data["order_id"], []).append(event_id)
    assert sum(len(ids) for ids in events.values()) == KEYS  # 100 events, never 200
    for number, pair in enumerate(answers):
        assert events[f"{prefix}-{number}"] == [pair[0][1]]
    for gateway in gateways:  # each process answered every key itself
        assert gateway.output().count("POST /v1/requests/place_order -> 202") == KEYS


def test_workers_share_one_port_and_one_sigterm_stops_them_all(
    tmp_path: Path, database_env: dict[str, str]
):
    gateway = GatewayProcess(tmp_path / "gateway.log", database_env, "--workers", "2", listening=2)
    try:
        status, _, first = gateway.post(
            "place_order", order("workers-1"), {"Idempotency-Key": "w1"}
        )
        again, headers, second = gateway.post(
            "place_order", order("workers-1"), {"Idempotency-Key": "w1"}
        )
        for number in range(2, 12):
            gateway.post("place_order", order(f"workers-{number}"), {})
        # Each scrape is a new connection, which the kernel gives to either worker: every one
        # shows both workers' figures, summed.
        scrapes = [_metric(gateway.url("/metrics"), _ACCEPTED) for _ in range(8)]
        replays = _metric(gateway.url("/metrics"), "gateway_idempotent_replays_total")
    finally:
        code = gateway.stop()

    assert (status, again) == (202, 202)
    assert second["event_id"] == first["event_id"]
    assert headers.get("Idempotent-Replayed") == "true"
    assert code == 0, gateway.output()
    assert scrapes == [12.0] * 8  # 11 events and 1 replay, all answered 202
    assert replays == 1.0
    assert "2 gateway workers started" in gateway.output()
    assert gateway.output().count("gateway stopped: every message was delivered") == 2


def test_more_than_one_worker_needs_postgresql(tmp_path: Path):
    result = run_pipeline(
        "gateway",
        "--workers",
        "2",
        env={"PIPELINE_DATABASE__URL": f"sqlite:///{tmp_path / 'gateway.db'}"},
        timeout=60,
    )

    assert result.returncode == 2
    assert "--workers 2 needs the Idempotency-Key store shared in PostgreSQL" in result.stderr
    assert not (tmp_path / "gateway.db").exists()  # refused before the database was touched


_ACCEPTED = 'gateway_requests_total{type="place_order",status="202"}'


def _metric(url: str, sample: str) -> float:
    """The value of one sample of a Prometheus text exposition, its labels in any order (0 when
    absent)."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if _sample_key(name) == _sample_key(sample):
            return float(value)
    return 0.0


def _sample_key(sample: str) -> tuple[str, frozenset[str]]:
    name, _, labels = sample.partition("{")
    return name, frozenset(labels.rstrip("}").split(",")) if labels else frozenset()
