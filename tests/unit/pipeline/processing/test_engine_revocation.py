"""A record waiting for room when its partition is revoked is left to the next owner.

The Faust binding's agent can be inside ``submit`` (backpressure) when a rebalance drains the
record's partition; the record must then neither start (its key's earlier records may be
handled again by the next owner) nor fail the agent.
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy.engine import Engine

from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.processing import Processor, Record, UnitOfWork
from pipeline.processing.engine import ProcessingEngine
from pipeline.processing.offsets import CommitPosition
from pipeline.settings import ProcessingSettings

TOPIC = "requests.orders"


class Sink:
    async def send(self, topic: str, message: KafkaMessage) -> None:
        raise AssertionError(f"nothing should be dead-lettered, got one for {topic}")


def record(offset: int, key: str) -> Record:
    message = encode(Event(source="/tests", type="Step", partitionkey=key, data={"n": offset}))
    return Record(TOPIC, 0, offset, message.key, message.value, message.headers)


def test_a_record_waiting_for_room_when_its_partition_is_drained_is_not_started(
    database: Engine,
) -> None:
    release = threading.Event()
    calls: list[int] = []
    commits: list[list[CommitPosition]] = []
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        calls.append(unit.record.offset)
        if event.partitionkey == "slow":
            assert release.wait(30), "the test never released the handler"

    engine = ProcessingEngine(
        processor,
        database=database,
        dead_letters=Sink(),
        on_commit=commits.append,
        settings=ProcessingSettings(max_in_flight=4, max_buffered=1),
    )

    async def scenario() -> None:
        engine.assigned([(TOPIC, 0)])
        await engine.submit(record(0, "slow"))
        waiting = asyncio.ensure_future(engine.submit(record(1, "other")))
        await asyncio.sleep(0.05)
        assert not waiting.done(), "the second record should wait for room"
        draining = asyncio.ensure_future(engine.drain([(TOPIC, 0)], timeout_s=30))
        await asyncio.sleep(0.05)
        release.set()  # the running record finishes inside the drain: room for the waiting one
        await asyncio.wait_for(draining, timeout=30)
        await asyncio.wait_for(waiting, timeout=30)  # returns: no "is draining" error
        await engine.wait_idle()
        await engine.close()

    asyncio.run(scenario())

    assert calls == [0]  # offset 1 was never started: the next owner reads it again
    assert [position for plan in commits for _, _, position in plan] == [1]
