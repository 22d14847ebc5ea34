"""What goes into the driver and the harness, and when: a topic no processor reads is refused,
a recording that does not fit is refused before anything goes in, and what the driver stamps
(dead letters included) follows the virtual clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pipeline.envelope import Event, encode
from pipeline.processing import Processor, ProcessorTestDriver, Reject, UnitOfWork
from pipeline.processing.harness import PipelineHarness
from pipeline.replay.recording import RecordedMessage
from pipeline.retry import RetryPolicy
from pipeline.settings import ProcessingSettings
from tests.support.driving import step_event

TOPIC = "inputs.orders"
OUTPUT = "inputs.points"


def refusing_processor(name: str = "refusing") -> Processor:
    """Refuses an event whose data says ``refuse``, and emits the others to :data:`OUTPUT`."""
    processor = Processor(name)

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        if event.data.get("refuse"):
            raise Reject(f"order {event.data['key']} refused")
        if event.data.get("fail"):
            raise RuntimeError("the database is down")
        unit.emit(
            Event(source="/t", type="Point", data=event.data),
            aggregate_type="order",
            aggregate_id=event.data["key"],
            topic=OUTPUT,
        )

    return processor


@pytest.fixture
def driver() -> Iterator[ProcessorTestDriver]:
    made = ProcessorTestDriver(refusing_processor(), partitions={TOPIC: 3})
    yield made
    made.close()


def recorded(partition: int, offset: int, topic: str = TOPIC) -> RecordedMessage:
    message = encode(step_event(f"k{offset}", offset))
    return RecordedMessage(
        topic=topic,
        partition=partition,
        offset=offset,
        key=message.key,
        value=message.value,
        headers=tuple(message.headers),
        timestamp_ms=1_767_225_600_000 + offset,
    )


# --- a topic no processor reads ----------------------------------------------------------------


def test_send_to_a_topic_the_processor_does_not_read_is_refused_naming_those_it_reads(driver):
    with pytest.raises(
        ValueError,
        match=r"^no processor here \(refusing\) reads inputs\.orderz, so nothing would handle "
        r"it; the topics read: inputs\.orders; did you mean inputs\.orders\?$",
    ):
        driver.send("inputs.orderz", step_event("k", 0))

    assert driver.topics == {}  # nothing went in, so "nothing dead-lettered" cannot pass for it


@pytest.mark.parametrize("partition", [3, 7, -1])
def test_send_to_a_partition_the_topic_does_not_have_is_refused(driver, partition):
    # Kafka refuses it; the driver took it, and the processor handled it.
    with pytest.raises(ValueError, match=r"^inputs\.orders has 3 partitions here \(0 to 2\)"):
        driver.send(TOPIC, step_event("k", 0), partition=partition)

    assert driver.topics == {}


def test_send_to_each_partition_the_topic_has_is_taken(driver):
    for partition in range(3):
        driver.send(TOPIC, step_event(f"k{partition}", 0), partition=partition)

    assert driver.run().processed == 3


def test_dead_letters_of_a_topic_the_processor_does_not_read_are_refused(driver):
    with pytest.raises(ValueError, match=r"reads inputs\.orderz, so nothing"):
        driver.dead_letters("inputs.orderz")


def test_a_recording_of_a_topic_the_processor_does_not_read_still_goes_in(driver):
    # A recording may hold several topics; replay_into_driver warns of those not read.
    [record] = driver.send_recording([recorded(0, 0, topic="elsewhere")])

    assert (record.topic, driver.run().processed) == ("elsewhere", 0)


def test_a_harness_refuses_a_topic_no_processor_reads_and_relays_to_one_all_the_same():
    first, second = refusing_processor("first"), Processor("second")
    second.handler("inputs.other")(lambda event, unit: None)
    with PipelineHarness([first, second]) as harness:
        with pytest.raises(
            ValueError,
            match=r"^no processor here \(first, second\) reads inputs\.ordres, so nothing would "
            r"handle it; the topics read: inputs\.orders, inputs\.other; did you mean",
        ):
            harness.send("inputs.ordres", step_event("k", 0))
        with pytest.raises(ValueError, match=r"reads inputs\.ordres"):
            harness.send_all("inputs.ordres", [])
        with pytest.raises(ValueError, match=r"reads inputs\.ordres"):
            harness.dead_letters("inputs.ordres")

        # The relay publishes to OUTPUT, which no processor here reads: not a mistake.
        harness.send(TOPIC, step_event("k", 0))
        harness.run_until_idle()
        assert [event.data["key"] for event in harness.published(OUTPUT)] == ["k"]


# --- a recording with partitions a topic lacks -------------------------------------------------


def test_preserve_partitions_checks_the_whole_recording_before_sending_any(driver):
    # Partitions 0 and 1 fit TOPIC's 3; the third message's 7 does not.
    messages = [recorded(0, 0), recorded(1, 1), recorded(7, 2)]

    with pytest.raises(
        ValueError,
        match=r"^preserve_partitions: inputs\.orders has 3 partitions here and the recording "
        r"has partition 7: give the driver partitions=\{\.\.\.\} \(or do not preserve "
        r"partitions\); nothing was sent$",
    ):
        driver.send_recording(messages, preserve_partitions=True)

    assert driver.topics == {}


def test_a_harness_checks_the_whole_recording_before_any_processor_gets_a_message():
    readers = [refusing_processor("first"), refusing_processor("second")]
    with PipelineHarness(readers, partitions={TOPIC: 2}) as harness:
        messages = [recorded(0, 0), recorded(1, 1), recorded(-1, 2), recorded(0, 3, "unread")]

        with pytest.raises(ValueError, match=r"has partition -1: .*nothing was sent"):
            harness.send_recording(messages, preserve_partitions=True)

        assert [driver.topics for driver in harness.drivers] == [{}, {}]
        # A topic nobody reads needs no partitions: its messages are dropped anyway.
        assert harness.send_recording(messages[:2] + messages[3:], preserve_partitions=True) == 3


# --- times the driver stamps -------------------------------------------------------------------


def test_a_dead_letter_is_stamped_with_the_virtual_time_it_was_sent(driver):
    driver.clock.advance(3600)
    driver.send(TOPIC, step_event("o-1", 0, data={"key": "o-1", "refuse": True}))

    driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert letter.original_timestamp_ms == driver.clock.epoch_ms
    assert letter.dead_lettered_at == "2026-01-01T01:00:00.000Z"
    [dlq_record] = [
        r for (name, _), log in driver.topics.items() if name.endswith(".dlq") for r in log
    ]
    assert dlq_record.timestamp_ms == driver.clock.epoch_ms


def test_a_dead_letter_after_its_retries_is_stamped_when_the_last_backoff_ended():
    retries = ProcessingSettings(
        retry=RetryPolicy(
            max_attempts=3, initial_backoff_s=60, multiplier=2, max_backoff_s=600, jitter=0
        )
    )
    with PipelineHarness([refusing_processor()], settings=retries) as harness:
        harness.advance(3600)
        harness.send(TOPIC, step_event("o-1", 0, data={"key": "o-1", "fail": True}))
        harness.run_until_idle()

        [letter] = harness.dead_letters(TOPIC)
        sent = datetime.fromtimestamp(letter.original_timestamp_ms / 1000, UTC)
        assert sent == datetime(2026, 1, 1, 1, tzinfo=UTC)
        # 60 s, then 120 s of backoff, on the virtual clock (it used to be the real time).
        assert letter.dead_lettered_at == "2026-01-01T01:03:00.000Z"
        assert harness.clock.now == datetime(2026, 1, 1, 1, 3, tzinfo=UTC)


class Ticker:
    """A handler's own clock, as docs/testing.md tells: a ``clock`` attribute the harness sets."""

    def __init__(self) -> None:
        self.clock = lambda: datetime.now(UTC)


def test_a_handler_reads_virtual_time_from_its_record_or_from_a_clocked_component():
    ticker = Ticker()
    own = ticker.clock
    seen: list[tuple[int | None, datetime]] = []
    processor = Processor("timed")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        seen.append((unit.record.timestamp_ms, ticker.clock()))

    with PipelineHarness([processor], clocked=[ticker]) as harness:
        harness.advance(90)
        harness.send(TOPIC, step_event("k", 0))
        harness.run_until_idle()

    moment = datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC)
    assert seen == [(int(moment.timestamp() * 1000), moment)]
    assert ticker.clock is own  # its own clock back after close()
