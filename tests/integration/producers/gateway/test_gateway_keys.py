"""API keys against the real PostgreSQL: the CLI, 401/403, revocation on a running gateway, the
open-mode warning, and no key, digest or token anywhere in what a run printed or shipped."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.engine import Engine

from pipeline.kafka.producer import EventProducer, build_event_producer
from pipeline.settings import GatewaySettings, PipelineSettings
from producers.gateway import create_app
from producers.gateway.key_table import add_key, load_keys, revoke_key
from tests.support.gateway_process import GatewayProcess, high_watermarks, messages_since, order
from tests.support.stack_cli import run_pipeline

SETTINGS = GatewaySettings(rate_per_s=10_000, burst=10_000)
KEY = re.compile(r"pgk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def secrets_of(key: str) -> list[str]:
    """The key, its secret part and the secret's digest: none may be printed or shipped."""
    secret = key[21:]
    return [key, secret, hashlib.sha256(secret.encode()).hexdigest()]


@pytest.fixture
def producer(pipeline_settings: PipelineSettings) -> Iterator[EventProducer]:
    with build_event_producer(pipeline_settings.kafka, pipeline_settings.producer) as producer:
        yield producer


def test_keys_add_prints_the_key_once_and_list_and_revoke_never_show_it(postgres_url: str):
    env = {"PIPELINE_DATABASE__URL": postgres_url}

    added = run_pipeline("gateway", "keys", "add", "shop", "--types", "place_order", env=env)
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert KEY.fullmatch(key), added.stdout  # the key alone, on the last (only) stdout line
    listed = run_pipeline("gateway", "keys", "list", env=env)
    again = run_pipeline("gateway", "keys", "add", "shop", "--types", "place_order", env=env)
    revoked = run_pipeline("gateway", "keys", "revoke", "shop", env=env)
    listed_after = run_pipeline("gateway", "keys", "list", env=env)

    assert listed.returncode == 0 and "shop" in listed.stdout and "place_order" in listed.stdout
    assert again.returncode == 2 and "exists already" in again.stderr
    assert revoked.returncode == 0 and "revoked" in revoked.stderr
    row = next(line for line in listed_after.stdout.splitlines() if "shop" in line)
    assert "UTC" in row.split("place_order", 1)[1].split("│", 2)[2]  # the revoked column
    everything = added.stderr + "".join(
        run.stdout + run.stderr for run in (listed, again, revoked, listed_after)
    )
    for secret in secrets_of(key):
        assert secret not in everything


def test_401_without_a_valid_key_403_for_another_type_and_a_revoked_key_is_refused_after_refresh(
    engine: Engine,
    producer: EventProducer,
    new_topic: Callable[..., str],
    pipeline_settings: PipelineSettings,
):
    topic = new_topic(partitions=1, prefix="gateway-keys")
    key = add_key(engine, "shop", ["place_order"])
    app = create_app(
        SETTINGS,
        producer,
        topic_for=lambda _type: topic,
        keys=partial(load_keys, engine),
        key_refresh_s=0.2,
    )

    async def scenario() -> list[tuple[int, dict[str, str]]]:
        seen: list[tuple[int, dict[str, str]]] = []
        async with TestClient(TestServer(app)) as client:

            async def post(kind: str, headers: dict[str, str]) -> int:
                answer = await client.post(
                    f"/v1/requests/{kind}", json=order("o-1"), headers=headers
                )
                seen.append((answer.status, dict(answer.headers)))
                return answer.status

            bearer = {"Authorization": f"Bearer {key}"}
            await post("place_order", {})
            await post("place_order", {"Authorization": f"Bearer {key[:-2]}xx"})
            await post("place_order", bearer)
            await post("cancel_order", bearer)
            await asyncio.to_thread(revoke_key, engine, "shop")
            for _ in range(200):  # refreshed every 0.2 s: refused within a few tries
                if await post("place_order", bearer) == 401:
                    break
                await asyncio.sleep(0.1)
        return seen

    seen = asyncio.run(scenario())
    statuses = [status for status, _ in seen]
    producer.flush(30)

    assert statuses[:4] == [401, 401, 202, 403]
    assert statuses[-1] == 401  # the revoked key, once the gateway read the keys again
    assert all(s == 202 for s in statuses[4:-1])
    assert seen[0][1]["WWW-Authenticate"].startswith("Bearer")
    assert sum(high_watermarks(pipeline_settings, topic).values()) == statuses.count(
        202
    )  # only the accepted requests were produced


def test_expect_100_continue_answers_the_key_type_and_permission_before_the_size(
    engine: Engine, producer: EventProducer, new_topic: Callable[..., str]
):
    # It was 413 for an announced body over the limit, whatever the key, type or permission:
    # the limit told before the key, and 413 where the same request without Expect got 403.
    topic = new_topic(partitions=1, prefix="gateway-keys")
    key = add_key(engine, "shop", ["place_order"])
    app = create_app(
        SETTINGS, producer, topic_for=lambda _type: topic, keys=partial(load_keys, engine)
    )

    async def first_line(client: TestClient, path: str, authorization: str | None) -> bytes:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        headers = f"Authorization: Bearer {authorization}\r\n" if authorization else ""
        writer.write(
            f"POST /v1/requests/{path} HTTP/1.1\r\nHost: gateway\r\n{headers}"
            "Content-Type: application/json\r\nExpect: 100-continue\r\n"
            f"Content-Length: {SETTINGS.max_body_bytes + 1}\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
        return answer.split(b"\r\n", 1)[0]

    async def scenario() -> list[bytes]:
        async with TestClient(TestServer(app)) as client:
            return [
                await first_line(client, "place_order", None),
                await first_line(client, "nosuch", key),
                await first_line(client, "cancel_order", key),
                await first_line(client, "place_order", key),
            ]

    answers = asyncio.run(scenario())

    assert answers == [
        b"HTTP/1.1 401 Unauthorized",
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 403 Forbidden",
        b"HTTP/1.1 413 Request Entity Too Large",
    ]


def test_an_open_gateway_says_so_in_one_warning_line_at_start(
    tmp_path: Path, postgres_url: str, pipeline_stack
):
    gateway = GatewayProcess(tmp_path / "gateway.log", {"PIPELINE_DATABASE__URL": postgres_url})
    try:
        status, _, _ = gateway.post("place_order", order(f"open-{uuid.uuid4().hex[:8]}"))
    finally:
        code = gateway.stop()

    warnings = [line for line in gateway.output().splitlines() if "WARNING" in line]
    assert [("no API key exists: the gateway is open" in line) for line in warnings] == [True]
    assert (status, code) == (202, 0)


def test_no_key_digest_or_token_in_the_output_or_the_logs_topic_of_an_authenticated_run(
    tmp_path: Path, postgres_url: str, pipeline_settings: PipelineSettings, pipeline_stack
):
    service = f"gateway-secrets-{uuid.uuid4().hex[:8]}"
    env = {"PIPELINE_DATABASE__URL": postgres_url, "PIPELINE_SERVICE_NAME": service}
    added = run_pipeline("gateway", "keys", "add", "shop", "--types", "place_order", env=env)
    key = added.stdout.strip()
    assert KEY.fullmatch(key), added.stderr
    start = high_watermarks(pipeline_settings, pipeline_settings.logs.topic)
    gateway = GatewayProcess(tmp_path / "gateway.log", {**env, "PIPELINE_LOGS__LEVEL": "DEBUG"})
    try:
        bearer = {"Authorization": f"Bearer {key}"}
        accepted, _, answer = gateway.post("place_order", order(f"{service}-1"), bearer)
        forbidden = gateway.post("cancel_order", {"order_id": "o"}, bearer)[0]
        wrong = gateway.post("place_order", order("o"), {"Authorization": f"Bearer {key}x"})[0]
        listed = run_pipeline("gateway", "keys", "list", env=env)
        revoked = run_pipeline("gateway", "keys", "revoke", "shop", env=env)
    finally:
        code = gateway.stop()
    shipped = [
        (value or b"").decode(errors="replace")
        for message_key, value, _ in messages_since(
            pipeline_settings, pipeline_settings.logs.topic, start
        )
        if message_key == b"gateway"  # every gateway's lines are keyed by the program's name
    ]

    assert (accepted, forbidden, wrong, code) == (202, 403, 401, 0)
    assert any(answer["event_id"] in line for line in shipped), "the run's lines were shipped"
    everything = "\n".join(
        [added.stderr, gateway.output(), listed.stdout, listed.stderr, revoked.stderr, *shipped]
    )
    for secret in secrets_of(key):
        assert secret not in everything
