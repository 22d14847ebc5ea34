"""The gateway's log levels by answer (the refusals of an outage summed up), and ``GET
/healthz`` following Kafka, without a broker.

Each request is a mocked aiohttp request (no socket: unit tests have none) handed to the app's
router and middleware, over a stub producer that acknowledges (or refuses) every event at once;
``/healthz`` asks a stub health check.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import pytest
from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request

from pipeline.envelope import Event, KafkaMessage
from pipeline.errors import PipelineError
from pipeline.kafka.producer import Delivery
from pipeline.settings import GatewaySettings
from producers.gateway import GatewayMetrics, create_app
from producers.gateway.request_log import RequestLog

SETTINGS = GatewaySettings(rate_per_s=10_000, burst=10_000)
JSON_HEADERS = {"Content-Type": "application/json"}
ORDER = {
    "order_id": "order-1",
    "customer_id": "customer-9",
    "lines": [{"sku": "sku-1", "quantity": 2, "unit_price": "12.50"}],
}


class StubProducer:
    """Acknowledges every event at once, at increasing offsets; or refuses every one."""

    def __init__(self, *, refuses: bool = False) -> None:
        self.refuses = refuses
        self.sent = 0

    def send_awaitable(self, topic: str, event: Event | KafkaMessage) -> asyncio.Future[Delivery]:
        if self.refuses:
            raise PipelineError("the local queue is full")
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        future.set_result(Delivery(event.id, topic, b"k", 0, self.sent))
        self.sent += 1
        return future

    @asynccontextmanager
    async def serving_on_loop(self) -> AsyncIterator[None]:
        yield


class StubHealth:
    """A Kafka health check answering ``problem`` (``None``: healthy), found by one probe only:
    requests are still sent (a problem that stands refuses them: test_gateway_refusals)."""

    def __init__(self, problem: str | None) -> None:
        self.answer = problem

    async def problem(self) -> str | None:
        return self.answer

    def known_problem(self) -> str | None:
        return self.answer

    def standing_problem(self, topic: str) -> str | None:
        return None

    async def watch(self) -> None:
        pass


class StandingOutage(StubHealth):
    """Kafka away, as the health check's last answers in a row found: requests refused at once."""

    def standing_problem(self, topic: str) -> str | None:
        return self.answer


def _payload(body: bytes) -> StreamReader:
    """A request body as aiohttp's request reads it."""
    payload = StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    return payload


class Client:
    """Requests to ``app`` through its router and middleware, from 127.0.0.1."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> web.Response:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda key, default=None: (
            ("127.0.0.1", 50000) if key == "peername" else default
        )
        all_headers = {**(headers or {}), "Content-Length": str(len(body))}
        probe = make_mocked_request(method, path, all_headers, app=self.app)
        match = await self.app.router.resolve(probe)
        request = make_mocked_request(
            method,
            path,
            all_headers,
            app=self.app,
            match_info=dict(match),
            transport=transport,
            payload=_payload(body),
            client_max_size=SETTINGS.max_body_bytes,
        )
        [middleware] = self.app.middlewares
        response = await middleware(request, match.handler)
        assert isinstance(response, web.Response)
        return response

    async def post(self, path: str, body: Any) -> web.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.request("POST", path, data, JSON_HEADERS)

    async def get(self, path: str) -> web.Response:
        return await self.request("GET", path)


def client(producer: StubProducer | None = None, **options: Any) -> Client:
    return Client(create_app(SETTINGS, producer or StubProducer(), **options))


def gateway_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "producers.gateway" and r.levelno == level]


# ---- log levels ------------------------------------------------------------------------------


def test_a_burst_of_bad_requests_logs_nothing_at_info(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="producers.gateway")

    gateway = client()

    async def scenario() -> list[int]:
        statuses = []
        for _ in range(600):
            response = await gateway.post("/v1/requests/place_order", b"{not json")
            statuses.append(response.status)
        unknown = await gateway.post("/v1/requests/nothing", ORDER)
        return [*statuses, unknown.status]

    statuses = asyncio.run(scenario())

    assert set(statuses) == {400, 404}
    assert gateway_records(caplog, logging.INFO) == []
    assert len(gateway_records(caplog, logging.DEBUG)) == 601


def test_an_accepted_request_is_logged_at_info(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="producers.gateway")

    async def scenario() -> int:
        return (await client().post("/v1/requests/place_order", ORDER)).status

    assert asyncio.run(scenario()) == 202
    [line] = gateway_records(caplog, logging.INFO)
    assert "-> 202" in line.getMessage()


def test_a_5xx_answer_is_logged_at_warning(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="producers.gateway")

    async def scenario() -> int:
        return (
            await client(StubProducer(refuses=True)).post("/v1/requests/place_order", ORDER)
        ).status

    assert asyncio.run(scenario()) == 503
    [line] = gateway_records(caplog, logging.WARNING)
    assert "-> 503" in line.getMessage()
    assert gateway_records(caplog, logging.INFO) == []


def test_an_outage_refusing_every_request_logs_a_warning_then_a_line_per_interval(
    caplog: pytest.LogCaptureFixture,
):
    # 4 clients retrying while Kafka was stopped: 13,771 WARNING lines "503 kafka_unavailable"
    # in about 45 s, one per request, all shipped to the logs topic once Kafka was back.
    caplog.set_level(logging.DEBUG, logger="producers.gateway")
    now = [0.0]
    metrics = GatewayMetrics()
    request_log = RequestLog(clock=lambda: now[0])
    down = StandingOutage("Kafka at 127.0.0.1:9092 does not answer (Local: Timed out)")
    app = create_app(
        SETTINGS,
        StubProducer(),
        clock=lambda: now[0],
        kafka_health=down,
        metrics=metrics,
        request_log=request_log,
    )
    gateway = Client(app)

    async def scenario() -> list[int]:
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            statuses = []
            for at, count in ((0.0, 200), (9.0, 5), (12.0, 3)):
                now[0] = at
                request_log.tick()  # what the running gateway does every second
                for _ in range(count):
                    response = await gateway.post("/v1/requests/place_order", ORDER)
                    statuses.append(response.status)
                if at == 9.0:
                    now[0] = 10.0
                    request_log.tick()
        finally:
            await runner.cleanup()  # the gateway stops: the last three get their line
        return statuses

    statuses = asyncio.run(scenario())

    assert statuses == [503] * 208
    warnings = [r.getMessage() for r in gateway_records(caplog, logging.WARNING)]
    assert len(warnings) == 3
    assert warnings[0].startswith("POST /v1/requests/place_order -> 503 kafka_unavailable (")
    assert warnings[0].endswith(
        "; the next 503 kafka_unavailable answers are logged at DEBUG and counted in a line "
        "every 10 s"
    )
    assert warnings[1:] == [
        "503 kafka_unavailable: 204 requests refused in the last 10 s (205 in 9 s so far)",
        "503 kafka_unavailable: 3 requests refused in the last 2 s (208 in 12 s so far)",
    ]
    refusals = [
        r
        for r in gateway_records(caplog, logging.DEBUG)
        if "-> 503 kafka_unavailable" in r.getMessage()
    ]
    assert len(refusals) == 207
    # The counters count every one.
    requests = {"type": "place_order", "status": "503"}
    assert metrics.registry.get_sample_value("gateway_requests_total", requests) == 208
    rejections = {"reason": "kafka_unavailable"}
    assert metrics.registry.get_sample_value("gateway_rejections_total", rejections) == 208


class SilentProducer(StubProducer):
    """Takes every event and never reports (Kafka refuses the login, or is away)."""

    def send_awaitable(self, topic: str, event: Event | KafkaMessage) -> asyncio.Future[Delivery]:
        return asyncio.get_running_loop().create_future()


def test_a_request_kafka_never_acknowledged_is_told_what_the_health_check_knows():
    # It said only "no answer in 30 s; librdkafka is still trying to deliver it" while the
    # broker refused the gateway's login and /healthz said so.
    refused = "Kafka at 127.0.0.1:19092 refused the connection (SASL authentication error)"
    gateway = Client(
        create_app(
            SETTINGS.model_copy(update={"produce_timeout_s": 0.05}),
            SilentProducer(),
            kafka_health=StubHealth(refused),
        )
    )

    async def scenario() -> tuple[int, Any]:
        response = await gateway.post("/v1/requests/place_order", ORDER)
        assert isinstance(response.body, bytes)
        return response.status, json.loads(response.body)

    status, body = asyncio.run(scenario())

    assert status == 503 and body["error"]["code"] == "not_acknowledged"
    assert body["error"]["message"].startswith(
        "Kafka did not acknowledge the request (no answer in 0.05 s; librdkafka is still trying "
        f"to deliver it; {refused}); it is not known to be recorded"
    )


# ---- /healthz --------------------------------------------------------------------------------


def _healthz(gateway: Client) -> tuple[int, dict[str, Any]]:
    async def scenario() -> tuple[int, Any]:
        response = await gateway.get("/healthz")
        assert isinstance(response.body, bytes)
        return response.status, json.loads(response.body)

    return asyncio.run(scenario())


def test_healthz_is_503_with_the_reason_while_kafka_does_not_answer():
    reason = "Kafka at 127.0.0.1:1 does not answer (Failed to get metadata)"

    status, body = _healthz(client(kafka_health=StubHealth(reason)))

    assert (status, body) == (503, {"status": "unavailable", "reason": reason})


def test_healthz_is_ok_while_kafka_answers():
    assert _healthz(client(kafka_health=StubHealth(None))) == (200, {"status": "ok"})


def test_healthz_follows_kafka_coming_back():
    health = StubHealth("Kafka at 127.0.0.1:1 does not answer (down)")
    gateway = client(kafka_health=health)

    before = _healthz(gateway)[0]
    health.answer = None
    after = _healthz(gateway)[0]

    assert (before, after) == (503, 200)
