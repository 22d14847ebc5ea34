"""Requests the gateway refuses before producing them: prices with more decimals than a price has
(sent as JSON numbers), control characters in text, and any request while the Kafka health
check's answers in a row say Kafka does not answer or the request's topic does not exist.

Mocked aiohttp requests (no socket) through the app's router and middleware, over a stub
producer that acknowledges every event at once and keeps it.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request
from confluent_kafka import KafkaError, KafkaException

from pipeline.settings import GatewaySettings
from producers.gateway import KafkaHealth, create_app
from tests.support.gateway_producers import KeepingProducer

SETTINGS = GatewaySettings(rate_per_s=10_000, burst=10_000)
BOOTSTRAP = "127.0.0.1:19092"
ORDERS, CUSTOMERS = "requests.orders", "requests.customers"
CUSTOMER = {"customer_id": "c-1", "email": "ann@example.com", "name": "Ann"}


def order(unit_price: Any = "9.90", order_id: str = "o-1") -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "c-9",
        "lines": [{"sku": "s-1", "quantity": 1, "unit_price": unit_price}],
    }


class Cluster:
    """``list_topics`` of a cluster that is down, or up with ``topics``."""

    def __init__(self, *topics: str, up: bool = True) -> None:
        self.up = up
        self.topics = list(topics)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if not self.up:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))
        return SimpleNamespace(
            topics={name: SimpleNamespace(partitions={0: object()}) for name in self.topics}
        )


def health_of(cluster: Cluster) -> KafkaHealth:
    return KafkaHealth(cluster.list_topics, bootstrap=BOOTSTRAP, topics=[ORDERS, CUSTOMERS])


class Gateway:
    def __init__(self, kafka_health: KafkaHealth | None = None) -> None:
        self.producer = KeepingProducer()
        self.app = create_app(SETTINGS, self.producer, kafka_health=kafka_health)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        payload = StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
        payload.feed_data(body)
        payload.feed_eof()
        all_headers = {**(headers or {}), "Content-Length": str(len(body))}
        probe = make_mocked_request(method, path, all_headers, app=self.app)
        match = await self.app.router.resolve(probe)
        request = make_mocked_request(
            method, path, all_headers, app=self.app, match_info=dict(match), payload=payload,
            client_max_size=SETTINGS.max_body_bytes,
        )  # fmt: skip
        [middleware] = self.app.middlewares
        response = await middleware(request, match.handler)
        assert isinstance(response, web.Response) and isinstance(response.body, bytes)
        return response.status, dict(response.headers), json.loads(response.body)

    async def post(
        self, kind: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        return await self.request("POST", f"/v1/requests/{kind}", data, all_headers)


# ---- prices as JSON numbers -----------------------------------------------------------------


@pytest.mark.parametrize("price", ["9.999999999999999999", "0.10000000000000001", "12.345"])
def test_a_price_number_with_more_than_two_decimals_is_422_never_rounded(price: str):
    # 9.999999999999999999 went out as "10.00" and 0.10000000000000001 as "0.10", with a 202;
    # the same prices as strings were refused.
    gateway = Gateway()
    body = json.dumps(order()).replace('"9.90"', price).encode()

    async def both() -> list[tuple[int, dict[str, str], Any]]:
        return [
            await gateway.post("place_order", body),
            await gateway.post("place_order", order(unit_price=price)),
        ]

    (status, _, answer), (as_string, _, string_answer) = asyncio.run(both())

    assert (status, answer["error"]["code"]) == (422, "schema_violation")
    assert [d["field"] for d in answer["error"]["details"]] == ["lines.0.unit_price"]
    assert answer == string_answer and as_string == 422
    assert gateway.producer.sent == []


@pytest.mark.parametrize(
    ("price", "written"), [("9.99", "9.99"), ("12.50", "12.50"), ("1e2", "100.00"), ("7", "7.00")]
)
def test_a_price_number_of_at_most_two_decimals_is_written_as_sent(price: str, written: str):
    gateway = Gateway()
    body = json.dumps(order()).replace('"9.90"', price).encode()

    status, _, _ = asyncio.run(gateway.post("place_order", body))

    [(_, event)] = gateway.producer.sent
    assert status == 202
    assert event.data["lines"][0]["unit_price"] == written


# ---- control characters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("register_customer", {**CUSTOMER, "name": "A\u0000n"}, "name"),
        ("register_customer", {**CUSTOMER, "email": "a\u0000n@example.com"}, "email"),
        ("cancel_order", {"order_id": "o-1", "reason": "too\u001blate"}, "reason"),
    ],
)
def test_a_control_character_in_text_is_422_naming_the_field(
    kind: str, body: dict[str, Any], field: str
):
    # The orders service failed on a NUL five times (PostgreSQL text cannot hold it), then
    # dead-lettered the request the gateway had taken with a 202.
    gateway = Gateway()

    status, _, answer = asyncio.run(gateway.post(kind, body))

    assert (status, answer["error"]["code"]) == (422, "schema_violation")
    [detail] = answer["error"]["details"]
    assert detail["field"] == field
    assert detail["message"].startswith("must not contain control characters")
    assert gateway.producer.sent == []


# ---- Kafka away, a topic missing --------------------------------------------------------------


async def checked(health: KafkaHealth, times: int) -> None:
    """The health check's answers, as its watch asks them while the gateway runs."""
    for _ in range(times):
        await health.check()


def test_while_kafka_does_not_answer_a_request_is_503_at_once_with_the_reason():
    # Each POST waited produce_timeout_s (30 s) for a 503 while /healthz knew Kafka was away.
    cluster = Cluster(ORDERS, CUSTOMERS, up=False)
    health = health_of(cluster)
    gateway = Gateway(health)

    async def scenario() -> list[tuple[int, dict[str, str], Any]]:
        await checked(health, 2)
        refused = await gateway.post("place_order", order())
        healthz = await gateway.request("GET", "/healthz")
        cluster.up = True
        await checked(health, 1)  # Kafka is back: the first good answer ends the refusals
        return [refused, healthz, await gateway.post("place_order", order())]

    (status, headers, answer), (_, _, healthz), (after, _, _) = asyncio.run(scenario())

    reason = f"Kafka at {BOOTSTRAP} does not answer (broker down)"
    assert (status, answer["error"]["code"]) == (503, "kafka_unavailable")
    assert answer["error"]["message"] == (
        f"{reason}; nothing was produced: send the request again once GET /healthz answers 200"
    )
    assert headers["Retry-After"] == "5"
    assert healthz == {"status": "unavailable", "reason": reason}
    assert after == 202
    assert [topic for topic, _ in gateway.producer.sent] == [ORDERS]  # only the last one


def test_a_single_failed_health_check_refuses_nothing():
    health = health_of(Cluster(ORDERS, CUSTOMERS, up=False))
    gateway = Gateway(health)

    async def scenario() -> int:
        await checked(health, 1)
        status, _, _ = await gateway.post("place_order", order())
        return status

    assert asyncio.run(scenario()) == 202


def test_a_missing_topic_is_named_by_healthz_and_refuses_its_requests_at_once():
    # requests.customers deleted: /healthz said ok and register_customer waited 30 s for a 503
    # that said only "no answer".
    health = health_of(Cluster(ORDERS))
    gateway = Gateway(health)

    async def scenario() -> list[tuple[int, dict[str, str], Any]]:
        await checked(health, 2)
        return [
            await gateway.post("register_customer", CUSTOMER),
            await gateway.post("place_order", order()),
            await gateway.request("GET", "/healthz"),
        ]

    (status, headers, answer), (other, _, _), (healthz, _, said) = asyncio.run(scenario())

    missing = (
        f"topic {CUSTOMERS} does not exist on Kafka at {BOOTSTRAP} "
        "(create it first, e.g. with `pipeline topics apply`)"
    )
    assert (status, answer["error"]["code"], headers["Retry-After"]) == (
        503,
        "kafka_unavailable",
        "5",
    )
    assert answer["error"]["message"].startswith(f"{missing}; nothing was produced")
    assert other == 202  # its topic is there
    assert (healthz, said) == (503, {"status": "unavailable", "reason": missing})
    assert [topic for topic, _ in gateway.producer.sent] == [ORDERS]


def test_a_refused_request_with_an_idempotency_key_leaves_it_free_for_the_retry():
    cluster = Cluster(ORDERS, CUSTOMERS, up=False)
    health = health_of(cluster)
    gateway = Gateway(health)
    key = {"Idempotency-Key": "o-1-attempt"}

    async def scenario() -> list[int]:
        await checked(health, 2)
        refused, _, _ = await gateway.post("place_order", order(), key)
        cluster.up = True
        await checked(health, 1)
        retried, _, _ = await gateway.post("place_order", order(), key)
        return [refused, retried]

    assert asyncio.run(scenario()) == [503, 202]
    assert len(gateway.producer.sent) == 1
