"""Faust's internals are used only on the Faust versions they were checked against; on any
other version Faust's own behaviour stays, and one log line says so."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import pytest
from faust.types import TP, EventT, Message

from pipeline.processing.faust import internals
from pipeline.processing.faust.internals import EngineQueue, FaustInternals, RawTopic

CHECKED = "0.15.3"
UNCHECKED = "0.16.0"
TOPIC = "orders.requests"


def app() -> faust.App:
    return faust.App("gate-test", broker="kafka://127.0.0.1:1", autodiscover=False)


class Sink:
    """A sink with room for ``room`` events, recording what it is given and how."""

    def __init__(self, room: int = 10) -> None:
        self.room = room
        self.now: list[EventT[Any]] = []
        self.waited: list[EventT[Any]] = []

    @property
    def has_room(self) -> bool:
        return len(self.now) + len(self.waited) < self.room

    def deliver_nowait(self, event: EventT[Any]) -> None:
        self.now.append(event)

    async def deliver(self, event: EventT[Any]) -> None:
        self.waited.append(event)


def message(offset: int) -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, [("ce_id", b"1")], b"key", b'{"n": 1}', None)


def test_a_checked_version_uses_our_fetch_loop() -> None:
    faust_app = app()

    FaustInternals(CHECKED).starting(faust_app)

    consumer: Any = faust_app.consumer
    assert consumer._drain_messages.__func__ is internals.drain_messages


def test_another_version_keeps_fausts_own_fetch_loop_and_says_so_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    faust_app = app()
    own = type(faust_app.consumer)._drain_messages

    with caplog.at_level(logging.INFO, logger="pipeline.processing"):
        gate = FaustInternals(UNCHECKED)
        gate.subscribe(faust_app, [TOPIC], Sink())
        gate.starting(faust_app)

    consumer: Any = faust_app.consumer
    assert consumer._drain_messages.__func__ is own
    assert [record.getMessage() for record in caplog.records] == [
        "faust-streaming 0.16.0: Faust's own topic, queue and fetch loop, and no commit of "
        "revoked partitions (checked: 0.15.x)"
    ]


def test_the_installed_faust_is_a_checked_version() -> None:
    assert FaustInternals().checked, f"faust-streaming {faust.__version__} is not checked"


def test_a_checked_version_subscribes_a_raw_topic_whose_queue_hands_events_to_the_sink() -> None:
    async def main() -> tuple[faust.Topic, Sink, EventT[Any], EventT[Any]]:
        faust_app = app()
        sink = Sink(room=1)
        channel = FaustInternals(CHECKED).subscribe(faust_app, [TOPIC], sink)
        first = await channel.decode(message(0))
        second = await channel.decode(message(1))
        # What Faust's conductor does: put_nowait_enhanced while not full, else channel.put.
        assert not channel.queue.full()
        channel.queue.put_nowait_enhanced(first, on_pressure_high=None, on_pressure_drop=None)
        assert channel.queue.full()
        await channel.put(second)
        assert channel in faust_app.topics
        return channel, sink, first, second

    channel, sink, first, second = asyncio.run(main())

    assert type(channel) is RawTopic
    assert isinstance(channel.queue, EngineQueue)
    assert sink.now == [first]
    assert sink.waited == [second]


def test_the_raw_topic_makes_events_of_the_message_as_it_is_without_fausts_serializers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> EventT[Any]:
        faust_app = app()

        def no_serializers(*_: Any, **__: Any) -> Any:
            raise AssertionError("Faust's serializer registry was used")

        monkeypatch.setattr(faust_app.serializers, "loads_key", no_serializers)
        monkeypatch.setattr(faust_app.serializers, "loads_value", no_serializers)
        channel = FaustInternals(CHECKED).subscribe(faust_app, [TOPIC], Sink())
        return await channel.decode(message(7))

    event = asyncio.run(main())

    assert (event.key, event.value, event.message.offset) == (b"key", b'{"n": 1}', 7)
    assert event.headers == {"ce_id": b"1"}


def test_another_version_subscribes_fausts_own_topic_and_queue() -> None:
    faust_app = app()

    channel = FaustInternals(UNCHECKED).subscribe(faust_app, [TOPIC], Sink())

    assert type(channel) is faust.Topic
    assert not isinstance(channel.queue, EngineQueue)
    assert channel in faust_app.topics


def test_fausts_own_queue_is_read_into_the_sink_on_another_version() -> None:
    async def main() -> Sink:
        faust_app = app()
        sink = Sink()
        channel = FaustInternals(UNCHECKED).subscribe(faust_app, [TOPIC], sink)
        faust_app.flow_control.resume()  # as after Faust's first rebalance
        events = [await channel.decode(message(offset)) for offset in range(3)]
        for event in events:
            await channel.put(event)  # what Faust's conductor does
        feeding = asyncio.create_task(internals.feed(channel, sink))
        while len(sink.waited) < len(events):
            await asyncio.sleep(0)
        feeding.cancel()
        return sink

    sink = asyncio.run(main())

    assert [event.message.offset for event in sink.waited] == [0, 1, 2]


class ConsumerStandIn:
    """Records the commits of revoked partitions made with Faust's ``_commit_offsets``."""

    def __init__(self) -> None:
        self.committed: list[dict[TP, int]] = []

    async def _commit_offsets(self, offsets: dict[TP, int]) -> bool:
        self.committed.append(dict(offsets))
        return True


@pytest.mark.parametrize(("version", "commits"), [(CHECKED, 1), (UNCHECKED, 0)])
def test_revoked_partitions_are_committed_only_on_a_checked_version(
    version: str, commits: int
) -> None:
    consumer = ConsumerStandIn()

    asyncio.run(FaustInternals(version).commit_revoked(consumer, {TP(TOPIC, 0): 12}))

    assert consumer.committed == [{TP(TOPIC, 0): 12}] * commits


class _AiokafkaConsumer:
    """What last_fetch_answer_ms reads: aiokafka's last_poll_timestamp, which asserts the
    partition is assigned and is None before the first fetch answer."""

    def __init__(self, stamps: dict[tuple[str, int], int | None]) -> None:
        self.stamps = stamps

    def last_poll_timestamp(self, partition: tuple[str, int]) -> int | None:
        assert tuple(partition) in self.stamps, "Partition is not assigned"
        return self.stamps[tuple(partition)]


class _Thread:
    def __init__(self, consumer: _AiokafkaConsumer | None) -> None:
        self.consumer = consumer

    def _ensure_consumer(self) -> _AiokafkaConsumer:
        if self.consumer is None:
            raise RuntimeError("not started")
        return self.consumer


class _FaustConsumer:
    def __init__(self, consumer: _AiokafkaConsumer | None) -> None:
        self._thread = _Thread(consumer)


def test_last_fetch_answer_is_the_latest_of_the_partitions_asked_about() -> None:
    from pipeline.processing.faust.internals import last_fetch_answer_ms

    consumer = _FaustConsumer(_AiokafkaConsumer({("t", 0): 1_000, ("t", 1): 3_000, ("t", 2): None}))

    assert last_fetch_answer_ms(consumer, [("t", 0), ("t", 1), ("t", 2)]) == 3_000
    assert last_fetch_answer_ms(consumer, [("t", 0), ("gone", 5)]) == 1_000  # revoked meanwhile
    assert last_fetch_answer_ms(consumer, [("t", 2)]) is None  # no answer yet
    assert last_fetch_answer_ms(_FaustConsumer(None), [("t", 0)]) is None  # not started
