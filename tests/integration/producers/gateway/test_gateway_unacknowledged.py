"""The gateway when the broker does not acknowledge: 503, never remembered.

A fake producer stands in where the broker would have to misbehave (failed, missing or late
acknowledgements), which the real Kafka cannot be made to do on cue; the HTTP side is the real
app over loopback sockets, hence these tests live beside the other gateway tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from pipeline.envelope import Event
from pipeline.kafka.producer import Delivery
from tests.integration.producers.gateway.test_gateway import (
    SETTINGS,
    assert_error,
    place_order,
    post,
    run_gateway,
)


class FakeProducer:
    """Answers each send with the next of ``outcomes``: a Delivery error text, "ok" or "never".

    "never" leaves the future pending, in :attr:`pending`, for the test to :meth:`deliver` or
    :meth:`fail` late, as librdkafka does after the gateway's timeout.
    """

    def __init__(self, *outcomes: str) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[tuple[str, Event]] = []
        self.pending: list[tuple[asyncio.Future[Delivery], str, Event]] = []

    def send_awaitable(self, topic: str, event: Event) -> asyncio.Future[Delivery]:
        self.sent.append((topic, event))
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        outcome = self.outcomes.pop(0)
        if outcome == "ok":
            future.set_result(Delivery(event.id, topic, b"k", partition=0, offset=len(self.sent)))
        elif outcome == "never":
            self.pending.append((future, topic, event))
        else:
            future.set_result(Delivery(event.id, topic, b"k", None, None, error=outcome))
        return future

    def deliver(self, offset: int = 41) -> None:
        """The oldest pending send is acknowledged now (its report served on the loop)."""
        future, topic, event = self.pending.pop(0)
        future.set_result(Delivery(event.id, topic, b"k", partition=0, offset=offset))

    def fail(self, error: str = "Local: Message timed out") -> None:
        future, topic, event = self.pending.pop(0)
        future.set_result(Delivery(event.id, topic, b"k", None, None, error=error))

    @asynccontextmanager
    async def serving_on_loop(self) -> AsyncIterator[None]:
        yield


def test_a_failed_delivery_is_503_and_not_remembered_so_a_retry_with_the_key_produces():
    producer = FakeProducer("Local: Message timed out", "ok")
    headers = {"Idempotency-Key": "key-503"}

    async def scenario(client):
        return [await post(client, place_order(), headers=headers) for _ in range(2)]

    (status, answer, response_headers), (retry_status, retried, _) = run_gateway(
        producer, "t", scenario
    )

    assert status == 503
    assert_error(answer, "not_acknowledged")
    assert "Message timed out" in answer["error"]["message"]
    assert response_headers["Retry-After"] == "1"
    assert retry_status == 202
    assert retried["event_id"] == producer.sent[1][1].id
    assert len(producer.sent) == 2


def test_no_acknowledgement_within_produce_timeout_is_503():
    producer = FakeProducer("never")
    settings = SETTINGS.model_copy(update={"produce_timeout_s": 0.05})

    status, answer, _ = run_gateway(
        producer, "t", lambda client: post(client, place_order()), settings
    )

    assert status == 503
    assert_error(answer, "not_acknowledged")
    assert "no answer in 0.05 s" in answer["error"]["message"]


LATE = SETTINGS.model_copy(update={"produce_timeout_s": 0.05})


async def settled(client: Any, deliver: Callable[[], None]) -> None:
    """Settle the late send, then let the gateway's loop see it (a request is a full round)."""
    deliver()
    await client.get("/healthz")


def test_a_retry_after_a_timeout_503_gets_the_late_202_and_produces_nothing_twice():
    producer = FakeProducer("never", "ok")
    headers = {"Idempotency-Key": "key-late"}

    async def scenario(client):
        first = await post(client, place_order(), headers=headers)
        await settled(client, producer.deliver)
        return first, await post(client, place_order(), headers=headers)

    (status, answer, _), (retry_status, retried, retry_headers) = run_gateway(
        producer, "t", scenario, LATE
    )

    assert status == 503
    assert_error(answer, "not_acknowledged")
    assert "still trying" in answer["error"]["message"]
    assert retry_status == 202
    assert retried == {
        "event_id": producer.sent[0][1].id,
        "topic": "t",
        "partition": 0,
        "offset": 41,
    }
    assert retry_headers["Idempotent-Replayed"] == "true"
    assert len(producer.sent) == 1


def test_a_retry_while_the_first_is_still_unacknowledged_is_409_and_not_sent():
    producer = FakeProducer("never", "ok")
    headers = {"Idempotency-Key": "key-pending"}

    async def scenario(client):
        first = await post(client, place_order(), headers=headers)
        retry = await post(client, place_order(), headers=headers)  # waits 0.05 s, then 409
        await settled(client, producer.deliver)
        return first, retry, await post(client, place_order(), headers=headers)

    (first_status, _, _), (status, answer, headers_409), (late_status, late, _) = run_gateway(
        producer, "t", scenario, LATE
    )

    assert first_status == 503
    assert status == 409
    assert_error(answer, "request_in_flight")
    assert headers_409["Retry-After"] == "1"
    assert late_status == 202
    assert late["event_id"] == producer.sent[0][1].id
    assert len(producer.sent) == 1


def test_a_delivery_failing_after_the_timeout_releases_the_key_so_a_retry_produces():
    producer = FakeProducer("never", "ok")
    headers = {"Idempotency-Key": "key-late-failure"}

    async def scenario(client):
        first = await post(client, place_order(), headers=headers)
        await settled(client, producer.fail)
        return first, await post(client, place_order(), headers=headers)

    (status, _, _), (retry_status, retried, retry_headers) = run_gateway(
        producer, "t", scenario, LATE
    )

    assert (status, retry_status) == (503, 202)
    assert "Idempotent-Replayed" not in retry_headers
    assert retried["event_id"] == producer.sent[1][1].id != producer.sent[0][1].id
    assert len(producer.sent) == 2


def test_an_event_unacknowledged_after_its_503_still_holds_its_in_flight_slot():
    producer = FakeProducer("never", "ok")

    async def scenario(client):
        first = await post(client, place_order("order-1"))
        while_pending = await post(client, place_order("order-2"))
        await settled(client, producer.deliver)
        return first, while_pending, await post(client, place_order("order-3"))

    (first, _, _), (status, answer, _), (after, _, _) = run_gateway(
        producer, "t", scenario, LATE, max_in_flight=1
    )

    assert first == 503
    assert status == 503
    assert_error(answer, "overloaded")
    assert after == 202
    assert len(producer.sent) == 2


def test_past_max_in_flight_a_request_is_503_overloaded_and_not_sent():
    producer = FakeProducer("never")
    settings = SETTINGS.model_copy(update={"produce_timeout_s": 0.5})

    async def scenario(client):
        waiting = asyncio.ensure_future(post(client, place_order("order-1")))
        while not producer.sent:  # the first request now holds the only slot
            await asyncio.sleep(0.01)
        second = await post(client, place_order("order-2"))
        await waiting
        return second

    status, answer, headers = run_gateway(producer, "t", scenario, settings, max_in_flight=1)

    assert status == 503
    assert_error(answer, "overloaded")
    assert headers["Retry-After"] == "1"
    assert len(producer.sent) == 1
