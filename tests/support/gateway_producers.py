"""A stand-in for the gateway's producer in its tests: acknowledges every event at once and keeps
it, with its topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pipeline.envelope import Event, KafkaMessage
from pipeline.kafka.producer import Delivery


class KeepingProducer:
    """Acknowledges every event at once and keeps it: ``sent`` holds ``(topic, event)``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Event]] = []

    def send_awaitable(self, topic: str, event: Event | KafkaMessage) -> asyncio.Future[Delivery]:
        assert isinstance(event, Event)
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        future.set_result(Delivery(event.id, topic, b"k", 0, len(self.sent)))
        self.sent.append((topic, event))
        return future

    @asynccontextmanager
    async def serving_on_loop(self) -> AsyncIterator[None]:
        yield
