"""The gateway app over HTTP against the real Kafka, each test on a topic of its own.

Every rejection answers a JSON error and leaves the topic empty (all high watermarks 0, read
after flushing the producer, so an event the gateway sent by mistake is counted). The test
client's peer is 127.0.0.1, trusted as a proxy only where a test says so. When the broker does
not acknowledge: test_gateway_unacknowledged.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import TopicPartition

from pipeline.envelope import decode
from pipeline.kafka.clients import build_consumer
from pipeline.kafka.producer import EventProducer, build_event_producer
from pipeline.kafka.watermarks import read_watermarks
from pipeline.request_types import REQUEST_TYPES
from pipeline.settings import GatewaySettings, PipelineSettings
from producers.gateway import create_app

T = TypeVar("T")
Scenario = Callable[[TestClient[web.Request, web.Application]], Awaitable[T]]

PARTITIONS = 3
# Generous limits, so that only the tests about limits meet them.
SETTINGS = GatewaySettings(rate_per_s=10_000, burst=10_000, max_body_bytes=4096)
# The test client connects from loopback: here it is a proxy whose X-Client-Id is believed.
TRUSTING_LOOPBACK = SETTINGS.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
JSON_HEADERS = {"Content-Type": "application/json"}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def place_order(order_id: str = "order-1") -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "customer-9",
        "lines": [{"sku": "sku-1", "quantity": 2, "unit_price": "12.50"}],
    }


@pytest.fixture
def producer(pipeline_settings: PipelineSettings) -> Iterator[EventProducer]:
    with build_event_producer(pipeline_settings.kafka, pipeline_settings.producer) as producer:
        yield producer


@pytest.fixture
def topic(new_topic: Callable[..., str]) -> str:
    return new_topic(partitions=PARTITIONS, prefix="gateway")


def run_gateway(
    producer: Any,
    topic: str,
    scenario: Scenario[T],
    settings: GatewaySettings = SETTINGS,
    **options: Any,
) -> T:
    """Run ``scenario`` with an HTTP client of a gateway that sends every request to ``topic``."""

    async def main() -> T:
        app = create_app(settings, producer, topic_for=lambda _type: topic, **options)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(main())


def messages_in(settings: PipelineSettings, group: str, topic: str, producer: EventProducer) -> int:
    """How many messages the topic holds: the sum of its partitions' high watermarks.

    Flushes ``producer`` first: an event it still holds (lingering, in flight) is not in the
    watermarks yet, and "produces nothing" must not pass just because it was not sent yet.
    """
    producer.flush(timeout_s=30)
    consumer = build_consumer(settings.kafka, group)
    try:
        # read_watermarks waits out a topic just created whose leaders are not known yet.
        deadline = time.monotonic() + 30
        return sum(
            read_watermarks(consumer, topic, partition, timeout_s=10, deadline=deadline)[1]
            for partition in range(PARTITIONS)
        )
    finally:
        consumer.close()


def read_answered(settings: PipelineSettings, group: str, answer: dict[str, Any]) -> Any:
    """The message where a 202 answer says it is (waits up to 30 s for it to be readable)."""
    topic, partition, offset = answer["topic"], answer["partition"], answer["offset"]
    consumer = build_consumer(settings.kafka, group)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            return message
        pytest.fail(f"nothing readable at {topic}[{partition}]@{offset} within 30 s")
    finally:
        consumer.close()


async def post(
    client: TestClient[web.Request, web.Application],
    body: Any,
    *,
    type_: str = "place_order",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(
        f"/v1/requests/{type_}", data=data, headers={**JSON_HEADERS, **(headers or {})}
    )
    return response.status, await response.json(), dict(response.headers)


def assert_error(answer: dict[str, Any], code: str) -> None:
    assert set(answer) == {"error"}
    assert set(answer["error"]) == {"code", "message", "details"}
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]


# ---- accepted requests ------------------------------------------------------------------------


def test_a_valid_request_is_answered_202_with_where_kafka_stored_the_event(
    producer, topic, pipeline_settings, consumer_group
):
    headers = {"X-Correlation-Id": "checkout-77", "traceparent": TRACEPARENT}

    status, answer, _ = run_gateway(
        producer, topic, lambda client: post(client, place_order("order-42"), headers=headers)
    )

    assert status == 202
    assert set(answer) == {"event_id", "topic", "partition", "offset"}
    assert answer["topic"] == topic
    message = read_answered(pipeline_settings, consumer_group, answer)
    assert message.key() == b"order-42"
    event = decode(message.value(), message.headers(), message.key())
    assert event.id == answer["event_id"]
    assert event.source == "/pipeline/gateway"
    assert event.type == REQUEST_TYPES["place_order"].event_type
    assert event.subject == event.partitionkey == "order-42"
    assert event.correlationid == "checkout-77"
    assert event.traceparent == TRACEPARENT
    assert event.data == {
        "order_id": "order-42",
        "customer_id": "customer-9",
        "lines": [{"sku": "sku-1", "quantity": 2, "unit_price": "12.50"}],
        "currency": "EUR",
    }
    assert Decimal(event.data["lines"][0]["unit_price"]) == Decimal("12.50")


def test_without_a_correlation_header_the_event_correlates_to_itself_and_bad_traceparent_is_dropped(
    producer, topic, pipeline_settings, consumer_group
):
    status, answer, _ = run_gateway(
        producer,
        topic,
        lambda client: post(client, place_order(), headers={"traceparent": "00-not-a-trace"}),
    )

    assert status == 202
    message = read_answered(pipeline_settings, consumer_group, answer)
    event = decode(message.value(), message.headers(), message.key())
    assert event.correlationid == event.id == answer["event_id"]
    assert event.traceparent is None


def test_requests_about_one_entity_land_on_one_partition_in_order(
    producer, topic, pipeline_settings, consumer_group
):
    async def scenario(client):
        place = await post(client, place_order("order-7"))
        cancel = await post(
            client, {"order_id": "order-7", "reason": "changed my mind"}, type_="cancel_order"
        )
        return place, cancel

    (place_status, placed, _), (cancel_status, cancelled, _) = run_gateway(
        producer, topic, scenario
    )

    assert (place_status, cancel_status) == (202, 202)
    assert placed["partition"] == cancelled["partition"]
    assert cancelled["offset"] > placed["offset"]


# ---- idempotency ------------------------------------------------------------------------------


def test_a_replayed_idempotency_key_returns_the_first_answer_and_produces_nothing_new(
    producer, topic, pipeline_settings, consumer_group
):
    headers = {"Idempotency-Key": "key-1"}

    async def scenario(client):
        return [await post(client, place_order(), headers=headers) for _ in range(3)]

    first, *replays = run_gateway(producer, topic, scenario)

    assert first[0] == 202
    assert "Idempotent-Replayed" not in first[2]
    for status, answer, response_headers in replays:
        assert (status, answer) == (202, first[1])
        assert response_headers["Idempotent-Replayed"] == "true"
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 1


def test_concurrent_requests_with_one_idempotency_key_produce_once(
    producer, topic, pipeline_settings, consumer_group
):
    headers = {"Idempotency-Key": "key-concurrent"}

    async def scenario(client):
        return await asyncio.gather(
            *(post(client, place_order(), headers=headers) for _ in range(5))
        )

    answers = run_gateway(producer, topic, scenario)

    assert {status for status, _, _ in answers} == {202}
    assert len({json.dumps(answer, sort_keys=True) for _, answer, _ in answers}) == 1
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 1


def test_an_idempotency_key_reused_with_another_body_is_422_and_produces_nothing_more(
    producer, topic, pipeline_settings, consumer_group
):
    headers = {"Idempotency-Key": "key-2"}

    async def scenario(client):
        first = await post(client, place_order("order-1"), headers=headers)
        second = await post(client, place_order("order-2"), headers=headers)
        return first, second

    (first_status, _, _), (status, answer, _) = run_gateway(producer, topic, scenario)

    assert first_status == 202
    assert status == 422
    assert_error(answer, "idempotency_key_reused")
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 1


def test_idempotency_keys_are_per_client(producer, topic, pipeline_settings, consumer_group):
    async def scenario(client):
        return [
            await post(client, place_order(), headers={"Idempotency-Key": "k", "X-Client-Id": c})
            for c in ("client-a", "client-b")
        ]

    answers = run_gateway(producer, topic, scenario, TRUSTING_LOOPBACK)

    assert [status for status, _, _ in answers] == [202, 202]
    assert answers[0][1]["event_id"] != answers[1][1]["event_id"]
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 2


# ---- rejections: each answers a JSON error and produces nothing ---------------------------------

REJECTIONS = [
    pytest.param(b'{"order_id": "o-1",', "place_order", {}, 400, "invalid_json", id="bad-json"),
    pytest.param(b"", "place_order", {}, 400, "invalid_json", id="empty-body"),
    pytest.param(b"\xff\xfe{}", "place_order", {}, 400, "invalid_json", id="not-utf8"),
    pytest.param(b'{"n": NaN}', "place_order", {}, 400, "invalid_json", id="nan"),
    pytest.param(b"[1, 2]", "place_order", {}, 400, "not_an_object", id="array-body"),
    pytest.param(
        json.dumps({**place_order(), "lines": []}).encode(),
        "place_order",
        {},
        422,
        "schema_violation",
        id="schema-violation",
    ),
    pytest.param(
        json.dumps(place_order()).encode(),
        "refund_order",
        {},
        404,
        "unknown_request_type",
        id="unknown-type",
    ),
    pytest.param(
        json.dumps(place_order()).encode(),
        "place_order",
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
        id="wrong-content-type",
    ),
    pytest.param(
        json.dumps(place_order()).encode(),
        "place_order",
        {"Content-Type": "application/json; charset=latin-1"},
        415,
        "unsupported_media_type",
        id="not-utf8-charset",
    ),
    pytest.param(
        json.dumps(place_order()).encode(),
        "place_order",
        {"Idempotency-Key": "has spaces"},
        400,
        "invalid_header",
        id="invalid-idempotency-key",
    ),
]


@pytest.mark.parametrize(("body", "type_", "headers", "status", "code"), REJECTIONS)
def test_a_bad_request_is_rejected_with_a_json_error_and_produces_nothing(
    producer, topic, pipeline_settings, consumer_group, body, type_, headers, status, code
):
    answered_status, answer, response_headers = run_gateway(
        producer, topic, lambda client: post(client, body, type_=type_, headers=headers)
    )

    assert answered_status == status
    assert response_headers["Content-Type"].startswith("application/json")
    assert_error(answer, code)
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 0


def test_a_schema_violation_names_every_bad_field(
    producer, topic, pipeline_settings, consumer_group
):
    body = {"order_id": "", "customer_id": "c-1", "lines": [{"sku": "s", "quantity": 0}]}

    status, answer, _ = run_gateway(producer, topic, lambda client: post(client, body))

    assert status == 422
    assert answer["error"]["details"] == [
        {"field": "order_id", "message": "String should have at least 1 character"},
        {"field": "lines.0.quantity", "message": "Input should be greater than 0"},
        {"field": "lines.0.unit_price", "message": "Field required"},
    ]
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 0


def test_an_unknown_type_answer_lists_the_known_types(producer, topic):
    status, answer, _ = run_gateway(
        producer, topic, lambda client: post(client, place_order(), type_="nope")
    )

    assert status == 404
    assert answer["error"]["details"][0]["known"] == sorted(REQUEST_TYPES)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversize_body_is_413_json_and_produces_nothing(
    producer, topic, pipeline_settings, consumer_group, chunked
):
    body = json.dumps({**place_order(), "padding": "x" * SETTINGS.max_body_bytes}).encode()

    async def chunks():
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    async def scenario(client):
        response = await client.post(
            "/v1/requests/place_order", data=chunks() if chunked else body, headers=JSON_HEADERS
        )
        return response.status, await response.json()

    status, answer = run_gateway(producer, topic, scenario)

    assert status == 413
    assert_error(answer, "body_too_large")
    assert str(SETTINGS.max_body_bytes) in answer["error"]["message"]
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 0


def test_expect_100_continue_refuses_an_oversize_body_before_it_is_sent(
    producer, topic, pipeline_settings, consumer_group
):
    # The gateway said "100 Continue", took the whole upload, then answered 413.
    small = json.dumps(place_order()).encode()

    async def exchange(client, length: int, body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(
            b"POST /v1/requests/place_order HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode()
        )
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if first.startswith(b"HTTP/1.1 100"):
            writer.write(body)
            await writer.drain()
            first += await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        else:
            first += await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
        return first

    async def scenario(client):
        too_large = await exchange(client, SETTINGS.max_body_bytes + 1, b"")
        fine = await exchange(client, len(small), small)
        return too_large, fine

    too_large, fine = run_gateway(producer, topic, scenario)

    assert too_large.startswith(b"HTTP/1.1 413"), too_large[:200]
    assert b"100 Continue" not in too_large
    assert b'"body_too_large"' in too_large
    assert fine.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202"), fine[:200]
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 1


def test_an_unknown_expectation_is_a_json_417_and_produces_nothing(producer, topic):
    async def scenario(client):
        return await post(client, place_order(), headers={"Expect": "foo"})

    status, answer, _ = run_gateway(producer, topic, scenario)

    assert status == 417
    assert_error(answer, "expectation_failed")
    assert "'foo'" in answer["error"]["message"]


def test_a_client_over_its_rate_gets_429_with_retry_after_and_nothing_is_produced(
    producer, topic, pipeline_settings, consumer_group
):
    # One token, refilled every 2 s, and a clock that never moves: the second request is refused.
    settings = SETTINGS.model_copy(update={"rate_per_s": 0.5, "burst": 1})

    async def scenario(client):
        spent = await post(client, {"not": "an order"})  # takes the only token, produces nothing
        return spent, await post(client, place_order())

    (spent_status, _, _), (status, answer, headers) = run_gateway(
        producer, topic, scenario, settings, clock=lambda: 100.0
    )

    assert spent_status == 422
    assert status == 429
    assert_error(answer, "rate_limited")
    assert headers["Retry-After"] == "2"
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 0


def test_an_untrusted_peer_cannot_share_another_clients_idempotency_key_scope(
    producer, topic, pipeline_settings, consumer_group
):
    async def scenario(client):
        return [
            await post(client, place_order(), headers={"Idempotency-Key": "k", "X-Client-Id": c})
            for c in ("client-a", "client-b")
        ]

    (_, first, _), (status, second, headers) = run_gateway(producer, topic, scenario)

    assert (status, second) == (202, first)
    assert headers["Idempotent-Replayed"] == "true"
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 1


def test_rate_limits_are_per_client_id_from_a_trusted_proxy(producer, topic):
    settings = TRUSTING_LOOPBACK.model_copy(update={"rate_per_s": 0.5, "burst": 1})

    async def scenario(client):
        return [
            (await post(client, place_order(), headers={"X-Client-Id": c}))[0]
            for c in ("a", "a", "b")
        ]

    statuses = run_gateway(producer, topic, scenario, settings, clock=lambda: 100.0)

    assert statuses == [202, 429, 202]


def test_an_untrusted_peer_changing_x_client_id_gets_no_fresh_bucket(
    producer, topic, pipeline_settings, consumer_group
):
    settings = SETTINGS.model_copy(update={"rate_per_s": 0.5, "burst": 1})

    async def scenario(client):
        return [
            await post(client, place_order(f"order-{c}"), headers={"X-Client-Id": c})
            for c in ("a", "b", "c")
        ]

    answers = run_gateway(producer, topic, scenario, settings, clock=lambda: 100.0)

    assert [status for status, _, _ in answers] == [202, 429, 429]
    assert "'127.0.0.1'" in answers[1][1]["error"]["message"]  # the client is its address
    assert messages_in(pipeline_settings, consumer_group, topic, producer) == 1


def test_x_client_id_is_checked_from_a_trusted_proxy_and_ignored_from_anyone_else(producer, topic):
    bad = {"X-Client-Id": "has spaces"}

    async def scenario(client):
        return (await post(client, place_order(), headers=bad))[:2]

    trusted_status, trusted_answer = run_gateway(producer, topic, scenario, TRUSTING_LOOPBACK)
    untrusted_status, _ = run_gateway(producer, topic, scenario)

    assert trusted_status == 400
    assert_error(trusted_answer, "invalid_header")
    assert untrusted_status == 202


def test_unknown_routes_and_methods_answer_json_errors(producer, topic):
    async def scenario(client):
        missing = await client.get("/v2/whatever")
        wrong_method = await client.get("/v1/requests/place_order")
        return (
            (missing.status, await missing.json()),
            (wrong_method.status, await wrong_method.json(), wrong_method.headers["Allow"]),
        )

    (missing_status, missing), (method_status, wrong_method, allow) = run_gateway(
        producer, topic, scenario
    )

    assert missing_status == 404
    assert_error(missing, "not_found")
    assert method_status == 405
    assert_error(wrong_method, "method_not_allowed")
    assert allow == "POST"


# ---- health and metrics -----------------------------------------------------------------------


def test_healthz_answers_ok(producer, topic):
    async def scenario(client):
        response = await client.get("/healthz")
        return response.status, await response.json()

    assert run_gateway(producer, topic, scenario) == (200, {"status": "ok"})


def test_metrics_count_requests_rejections_replays_and_produce_latency(producer, topic):
    async def scenario(client):
        await post(client, place_order(), headers={"Idempotency-Key": "m-1"})
        await post(client, place_order(), headers={"Idempotency-Key": "m-1"})
        await post(client, b"{oops")
        await post(client, place_order(), type_="nope")
        response = await client.get("/metrics")
        return response.headers["Content-Type"], await response.text()

    content_type, text = run_gateway(producer, topic, scenario)

    assert content_type.startswith("text/plain")
    lines = set(text.splitlines())
    assert 'gateway_requests_total{status="202",type="place_order"} 2.0' in lines
    assert 'gateway_requests_total{status="400",type="place_order"} 1.0' in lines
    assert 'gateway_requests_total{status="404",type="unknown"} 1.0' in lines
    assert 'gateway_rejections_total{reason="invalid_json"} 1.0' in lines
    assert 'gateway_rejections_total{reason="unknown_request_type"} 1.0' in lines
    assert "gateway_idempotent_replays_total 1.0" in lines
    assert f'gateway_produce_latency_seconds_count{{topic="{topic}"}} 1.0' in lines
