"""A processor's consumer stops although a fetch it cancels was waiting out its retry back-off
(internals.stop_past_cancelled_fetches), as every fetch does while Kafka is away."""

from __future__ import annotations

import asyncio
from types import MethodType, SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.consumer import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher

from pipeline.processing.faust.internals import stop_past_cancelled_fetches


async def _backing_off() -> None:
    # What aiokafka's _proc_fetch_request does after a failed fetch: sleep the back-off.
    await asyncio.sleep(3600)


async def _consumer_with_fetches_backing_off(count: int) -> Any:
    """An aiokafka consumer's state as stop() sees it, closed by aiokafka's own stop and
    Fetcher.close (no broker): its fetch loop and ``count`` fetches waiting out a back-off."""
    fetcher = SimpleNamespace(
        _fetch_task=asyncio.create_task(_backing_off()),
        _fetch_waiters=set(),
        _pending_tasks={asyncio.create_task(_backing_off()) for _ in range(count)},
    )
    fetcher._notify = MethodType(Fetcher._notify, fetcher)
    fetcher.close = MethodType(Fetcher.close, fetcher)
    closed: list[str] = []

    async def close_client() -> None:
        closed.append("client")

    consumer = SimpleNamespace(
        _closed=False, _coordinator=None, _fetcher=fetcher, _client=SimpleNamespace()
    )
    consumer._client.close = close_client
    consumer.stop = MethodType(AIOKafkaConsumer.stop, consumer)
    consumer.closed = closed
    await asyncio.sleep(0)  # the fetches are waiting
    return consumer


def test_aiokafkas_own_stop_ends_half_way():
    # The reason stop_past_cancelled_fetches exists; if aiokafka fixes Fetcher.close, this says
    # so (and the wrapper can go).
    async def scenario() -> Any:
        consumer = await _consumer_with_fetches_backing_off(2)
        with pytest.raises(asyncio.CancelledError):
            await consumer.stop()
        return consumer

    consumer = asyncio.run(scenario())
    assert consumer.closed == []


def test_the_stop_finishes_every_fetch_and_closes_the_client():
    async def scenario() -> Any:
        consumer = await _consumer_with_fetches_backing_off(3)
        stop_past_cancelled_fetches(consumer)
        await consumer.stop()
        return consumer

    consumer = asyncio.run(scenario())
    assert consumer.closed == ["client"]
    assert all(task.done() for task in consumer._fetcher._pending_tasks)


def test_a_stop_that_is_itself_cancelled_stays_cancelled():
    async def scenario() -> tuple[Any, asyncio.Task[None]]:
        consumer = await _consumer_with_fetches_backing_off(1)
        stop_past_cancelled_fetches(consumer)
        release = asyncio.Event()

        async def slow_close() -> None:
            await release.wait()

        consumer._fetcher.close = slow_close
        stopping = asyncio.create_task(consumer.stop())
        await asyncio.sleep(0)
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        return consumer, stopping

    consumer, stopping = asyncio.run(scenario())
    assert stopping.cancelled()
    assert consumer.closed == []
