"""Look-ups started ahead: which events get one, each used once, none kept past a revocation."""

from __future__ import annotations

import asyncio
import gc

from pipeline.envelope import Event, encode
from pipeline.processing import Processor, Record, UnitOfWork
from pipeline.processing.attempt import decode_record
from pipeline.processing.group_commit import Seen
from pipeline.processing.grouper import Grouper
from pipeline.processing.lanes import Work
from pipeline.processing.look_ahead import LookAhead

ASYNC_TOPIC, SYNC_TOPIC = "requests.async", "requests.sync"


def processor() -> Processor:
    built = Processor("orders")

    @built.handler(ASYNC_TOPIC)
    async def handle_async(event: Event, unit: UnitOfWork) -> None:
        return None

    @built.handler(SYNC_TOPIC)
    def handle_sync(event: Event, unit: UnitOfWork) -> None:
        return None

    return built


def work(topic: str, offset: int, partition: int = 0) -> Work[Record]:
    message = encode(Event(source="/tests", type="Step", partitionkey=f"k{offset}", data={}))
    record = Record(topic, partition, offset, message.key, message.value, message.headers)
    return Work(topic, partition, offset, record.key, record)


def broken(offset: int) -> Work[Record]:
    record = Record(ASYNC_TOPIC, 0, offset, b"k", b"not an event", [])
    return Work(ASYNC_TOPIC, 0, offset, b"k", record)


def test_async_handlers_events_are_looked_up_once_in_one_group_others_not_at_all() -> None:
    groups: list[list[str]] = []

    async def look_up(items: list[tuple[str, str, bytes | None]]) -> list[Seen]:
        groups.append([event_id for event_id, _, _ in items])
        return [Seen(None, parked=False) for _ in items]

    async def scenario() -> None:
        ahead = LookAhead(processor(), Grouper.awaiting(look_up))
        first, second = work(ASYNC_TOPIC, 0), work(ASYNC_TOPIC, 1)
        ahead.start([first, work(SYNC_TOPIC, 2), broken(3), second, first])
        assert len(ahead) == 2  # the sync handler's and the undecodable event take other paths

        taken = ahead.take(first)
        assert taken is not None
        assert await taken.seen == Seen(None, parked=False)
        assert ahead.take(first) is None  # once
        assert taken.event == decode_record(first.payload)
        assert groups == [[taken.event.id, decode_record(second.payload).id]]

    asyncio.run(scenario())


def test_the_look_ups_of_revoked_partitions_are_dropped() -> None:
    async def look_up(items: list[tuple[str, str, bytes | None]]) -> list[Seen]:
        return [Seen(None, parked=False) for _ in items]

    async def scenario() -> None:
        ahead = LookAhead(processor(), Grouper.awaiting(look_up))
        kept, revoked = work(ASYNC_TOPIC, 0, partition=0), work(ASYNC_TOPIC, 0, partition=1)
        ahead.start([kept, revoked])

        ahead.forget([(ASYNC_TOPIC, 1)])

        assert ahead.take(revoked) is None
        assert ahead.take(kept) is not None
        await asyncio.sleep(0)

    asyncio.run(scenario())


def test_a_failed_look_up_nobody_awaits_reports_nothing() -> None:
    async def look_up(items: list[tuple[str, str, bytes | None]]) -> list[Seen]:
        raise ConnectionError("database away")

    errors: list[dict[str, object]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        ahead = LookAhead(processor(), Grouper.awaiting(look_up))
        dropped = work(ASYNC_TOPIC, 0)
        ahead.start([dropped])
        await asyncio.sleep(0.01)
        ahead.forget([(ASYNC_TOPIC, 0)])

    asyncio.run(scenario())
    gc.collect()  # the dropped task is collected: an exception never retrieved is said there
    assert errors == []
