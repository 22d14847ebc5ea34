"""The shared Idempotency-Key store when PostgreSQL drops the gateway's connections between
requests (a restart, a failover, an idle reaper: here ``pg_terminate_backend``), on a real
``pipeline gateway`` over the real Kafka and a PostgreSQL database of the test's own.

Each key must produce one event, and a retry with it must get the first answer replayed: the
store's statements run again on a fresh connection when theirs was lost, where a claim, an
answer, and nothing else, could get lost (a 503 for the claim, or an answer never stored and a
second event once its claim expired)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from pipeline.async_postgres import libpq_conninfo
from pipeline.request_types import REQUEST_TYPES
from pipeline.settings import PipelineSettings
from tests.support.gateway_process import GatewayProcess, high_watermarks, messages_since, order

TOPIC = REQUEST_TYPES["place_order"].topic


@pytest.fixture
def database_env(postgres_url: str, catalogue_topics) -> dict[str, str]:
    return {"PIPELINE_DATABASE__URL": postgres_url}


def _drop_connections(postgres_url: str) -> int:
    """Terminate every backend of the test's database (the gateway's); how many there were."""
    url = make_url(postgres_url)
    conninfo = libpq_conninfo(create_engine(url.set(database="postgres")))
    with psycopg.connect(conninfo, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (url.database,),
        ).fetchone()
    time.sleep(0.3)  # the backends are gone before the next request
    return int(row[0]) if row else 0


def test_connections_dropped_between_requests_lose_no_answer_and_make_no_second_event(
    tmp_path: Path,
    database_env: dict[str, str],
    postgres_url: str,
    pipeline_settings: PipelineSettings,
):
    prefix = f"dropped-{uuid.uuid4().hex[:8]}"
    start = high_watermarks(pipeline_settings, TOPIC)
    gateway = GatewayProcess(tmp_path / "gateway.log", database_env)
    answers: dict[str, list[tuple[int, str]]] = {}
    dropped = []

    def post(number: int) -> None:
        status, headers, body = gateway.post(
            "place_order", order(f"{prefix}-{number}"), {"Idempotency-Key": f"{prefix}-{number}"}
        )
        replayed = headers.get("Idempotent-Replayed") == "true"
        answers.setdefault(f"{prefix}-{number}", []).append(
            (status, body.get("event_id", json.dumps(body)) + (" (replayed)" if replayed else ""))
        )
        time.sleep(0.5)  # its answer is stored in the background after the 202

    try:
        post(0)  # every connection of the store is open now
        for number in (1, 2, 3):
            dropped.append(_drop_connections(postgres_url))
            post(number)  # its claim and its answer, each on a connection PostgreSQL dropped
            dropped.append(_drop_connections(postgres_url))
            post(number)  # a retry: the claim's read, on a dropped connection again
        dropped.append(_drop_connections(postgres_url))
        for number in (0, 1, 2, 3):
            post(number)
    finally:
        code = gateway.stop()

    assert code == 0, gateway.output()
    for key, got in answers.items():
        first_status, first_id = got[0]
        assert first_status == 202, (key, got, gateway.output())
        assert got[1:] == [(202, f"{first_id} (replayed)")] * (len(got) - 1), (key, got)
    events: dict[str, list[str]] = {}
    for _key, value, headers in messages_since(pipeline_settings, TOPIC, start):
        data = json.loads(value or b"{}")
        if str(data.get("order_id", "")).startswith(f"{prefix}-"):
            events.setdefault(data["order_id"], []).append(dict(headers)["ce_id"].decode())
    assert events == {key: [got[0][1]] for key, got in answers.items()}  # one event per key
    assert "could not be stored" not in gateway.output()
    assert all(dropped), dropped  # the gateway's connections were there to drop, each time
