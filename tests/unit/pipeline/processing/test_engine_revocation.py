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
from pipeline.processing import Processor, Record, UnitOfWork, inbox, parked_keys
from pipeline.processing.engine import ProcessingEngine
from pipeline.processing.offsets import CommitPosition
from pipeline.retry import RetryPolicy
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


def test_a_dead_letter_acknowledged_after_the_next_owner_processed_the_event_changes_nothing(
    database: Engine,
) -> None:
    # The old owner's dead letter waits for Kafka while its partition moves on; the next owner
    # handles the event. The late dead letter must not turn "processed" into "dead_lettered"
    # and park the key (later events of the key would be dead-lettered, a redrive would apply
    # the event twice).
    failing = {"now": True}
    applied: list[int] = []
    processor = Processor("orders")

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        if failing["now"]:
            raise RuntimeError("transient")
        applied.append(unit.record.offset)

    class HeldSink:
        def __init__(self) -> None:
            self.acknowledge = asyncio.Event()
            self.sent: list[KafkaMessage] = []

        async def send(self, topic: str, message: KafkaMessage) -> None:
            await self.acknowledge.wait()
            self.sent.append(message)

    settings = ProcessingSettings(
        max_in_flight=4, sync_group_wait_ms=0, retry=RetryPolicy(max_attempts=1, jitter=0)
    )
    first = record(0, "k")
    old_sink = HeldSink()
    new_sink = HeldSink()
    new_sink.acknowledge.set()

    async def scenario() -> None:
        old = ProcessingEngine(
            processor,
            database=database,
            dead_letters=old_sink,
            on_commit=lambda plan: None,
            settings=settings,
        )
        new = ProcessingEngine(
            processor,
            database=database,
            dead_letters=Sink(),
            on_commit=lambda plan: None,
            settings=settings,
        )
        old.assigned([(TOPIC, 0)])
        await old.submit(first)
        await asyncio.sleep(0.3)  # the attempt failed; its dead letter waits for Kafka
        await old.drain([(TOPIC, 0)], timeout_s=0.05)  # the partition moves on
        failing["now"] = False
        new.assigned([(TOPIC, 0)])
        await new.submit(first)
        await asyncio.wait_for(new.wait_idle(), 10)
        old_sink.acknowledge.set()  # the old owner's dead letter is acknowledged at last
        for _ in range(200):
            if old_sink.sent:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the old owner notes it in the inbox (or not)
        await new.submit(record(1, "k"))  # the key's next event
        await asyncio.wait_for(new.wait_idle(), 10)
        await old.close(0.1)
        await new.close(0.1)

    asyncio.run(scenario())

    assert old_sink.sent, "the old owner's dead letter was never sent: the test proves nothing"
    assert applied == [0, 1]  # the key was not parked by the stale dead letter
    assert new_sink.sent == []
    with database.connect() as connection:
        assert inbox.outcome_of(connection, consumer_group="orders", event_id=event_id(first)) == (
            "processed"
        )
        assert (
            parked_keys.parked_key(connection, consumer_group="orders", topic=TOPIC, key=b"k")
            is None
        )


def event_id(record: Record) -> str:
    value = dict(record.headers)["ce_id"]
    return value.decode() if isinstance(value, bytes) else value
